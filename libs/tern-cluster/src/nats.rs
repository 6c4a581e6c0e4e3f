use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// A nats-server child process with JetStream, on a free loopback port; killed on drop.
pub struct NatsServer {
    child: Child,
    port: u16,
}

/// Where to find nats-server: `TERN_NATS_SERVER`, else `nats-server` on PATH.
pub fn nats_server_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("TERN_NATS_SERVER") {
        return Ok(p.into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("nats-server");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "nats-server not found: install it with `sudo apt-get install nats-server` \
         (or put a nats-server 2.9+ binary on PATH, or set TERN_NATS_SERVER)"
    )
}

/// The largest message nats-server accepts, as Tern runs it (the server allows up to 64 MiB).
pub const MAX_PAYLOAD: usize = 8 * 1024 * 1024;

impl NatsServer {
    /// Starts nats-server storing JetStream data under `store_dir`, logging to `log_file`.
    pub fn start(store_dir: &Path, log_file: &Path) -> anyhow::Result<Self> {
        let bin = nats_server_binary()?;
        std::fs::create_dir_all(store_dir).context("create JetStream store dir")?;
        let port = crate::free_port().context("pick a port for nats-server")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_file)
            .with_context(|| format!("open {}", log_file.display()))?;
        // NOTE: the default max_payload (1 MiB) is below the JSON form of a valid 400 KB item
        // (binary is base64, control characters six bytes each): Tern needs 8 MiB.
        let conf = store_dir.join("tern-nats.conf");
        std::fs::write(&conf, format!("max_payload: {MAX_PAYLOAD}\n"))
            .with_context(|| format!("write {}", conf.display()))?;
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let mut server = Self { child, port };
        server.wait_listening(Duration::from_secs(10))?;
        Ok(server)
    }

    fn wait_listening(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("nats-server exited at start-up ({status}); see its log");
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "nats-server did not listen on port {} within {timeout:?}",
            self.port
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        crate::process::terminate(&mut self.child, Duration::from_secs(5));
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
