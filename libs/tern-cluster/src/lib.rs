//! A local Tern cluster as processes: a real nats-server with JetStream and each service as its
//! own process. `tern up` and the integration tests share it.

mod cluster;
mod nats;
mod process;

pub use cluster::{Cluster, ClusterSpec, StorageNodeSpec, NATS};
pub use nats::NatsServer;
pub use process::{log_tail, ServiceProcess};

use std::net::TcpListener;

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
