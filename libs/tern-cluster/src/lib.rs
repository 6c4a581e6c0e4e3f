//! A local Tern cluster as processes: a real nats-server with JetStream and each service as its
//! own process. `tern up` and the integration tests share it.

pub mod bus_auth;
mod cluster;
mod nats;
mod process;
mod secrets;
pub mod sigv4;

pub use cluster::{
    Cluster, ClusterSpec, StorageNodeSpec, TlsFiles, DEV_ACCESS_KEY_ID, DEV_SECRET_ACCESS_KEY, NATS,
};
pub use nats::NatsServer;
pub use process::{log_tail, ServiceProcess};

use std::net::TcpListener;

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `n` distinct TCP ports on 127.0.0.1 that were free a moment ago (all held at once while they
/// are chosen, so no two are the same).
pub fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let held = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    held.iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}
