use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// A nats-server child process with JetStream on free loopback ports (client and monitoring),
/// syncing every JetStream write to disk before acknowledging it; killed on drop. It can be
/// restarted on the same ports, so clients reconnect to the URL they know.
pub struct NatsServer {
    child: Option<Child>,
    bin: PathBuf,
    conf: PathBuf,
    log_file: PathBuf,
    port: u16,
    monitor_port: u16,
}

/// The oldest nats-server Tern runs on: `sync_interval: always` came with 2.10.
const MIN_VERSION: (u32, u32) = (2, 10);

/// Where `scripts/install-deps` puts the pinned nats-server: `target/tools`, found from the running
/// executable (`target/<profile>/tern`, or a test in `target/<profile>/deps/`).
fn bundled_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(2)
        .take(2)
        .map(|dir| dir.join("tools/nats-server"))
        .find(|p| p.is_file())
}

/// Where to find nats-server: `TERN_NATS_SERVER`, else the one `scripts/install-deps` fetched,
/// else a `nats-server` on PATH that is 2.10 or newer.
pub fn nats_server_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("TERN_NATS_SERVER") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!(
                "TERN_NATS_SERVER names {}, which is not a file: unset it to use the nats-server \
                 that scripts/install-deps fetches into target/tools",
                p.display()
            );
        }
        return Ok(p);
    }
    if let Some(bundled) = bundled_binary() {
        return Ok(bundled);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut too_old = Vec::new();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("nats-server");
        if !candidate.is_file() {
            continue;
        }
        match version_of(&candidate) {
            Some(v) if v >= MIN_VERSION => return Ok(candidate),
            v => too_old.push(format!("{} ({v:?})", candidate.display())),
        }
    }
    bail!(
        "no nats-server 2.10 or newer found (too old: {}): run scripts/install-deps, which \
         fetches the pinned one into target/tools, or set TERN_NATS_SERVER",
        if too_old.is_empty() {
            "none".to_string()
        } else {
            too_old.join(", ")
        }
    )
}

/// (major, minor) of a nats-server binary, from `nats-server --version`.
fn version_of(bin: &Path) -> Option<(u32, u32)> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    parse_version(&String::from_utf8_lossy(&out.stdout))
}

/// (major, minor) of "nats-server: v2.15.1".
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let v = text.trim().rsplit(' ').next()?.trim_start_matches('v');
    let mut parts = v.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The largest message nats-server accepts, as Tern runs it (the server allows up to 64 MiB).
pub const MAX_PAYLOAD: usize = 8 * 1024 * 1024;

/// The configuration Tern runs nats-server with (compose mounts the same settings from
/// `compose/nats.conf`).
pub fn config_text(store_dir: &Path, monitor_port: u16) -> String {
    // NOTE: the default max_payload (1 MiB) is below the JSON form of a valid 400 KB item
    // (binary is base64, control characters six bytes each): Tern needs 8 MiB.
    // NOTE: JetStream's default is to fsync every 2 minutes; table metadata must survive a power
    // cut, so every write is synced before it is acknowledged.
    format!(
        "max_payload: {MAX_PAYLOAD}\n\
         http: \"127.0.0.1:{monitor_port}\"\n\
         jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n",
        store_dir.display()
    )
}

impl NatsServer {
    /// Starts nats-server storing JetStream data under `store_dir`, logging to `log_file`.
    pub fn start(store_dir: &Path, log_file: &Path) -> anyhow::Result<Self> {
        Self::start_with(store_dir, log_file, "")
    }

    /// Like [`Self::start`], with `extra` appended to the configuration (an `authorization`
    /// block).
    pub fn start_with(store_dir: &Path, log_file: &Path, extra: &str) -> anyhow::Result<Self> {
        let bin = nats_server_binary()?;
        std::fs::create_dir_all(store_dir).context("create JetStream store dir")?;
        let ports = crate::free_ports(2).context("pick ports for nats-server")?;
        let (port, monitor_port) = (ports[0], ports[1]);
        let conf = store_dir.join("tern-nats.conf");
        std::fs::write(&conf, config_text(store_dir, monitor_port) + extra)
            .with_context(|| format!("write {}", conf.display()))?;
        let mut server = Self {
            child: None,
            bin,
            conf,
            log_file: log_file.to_path_buf(),
            port,
            monitor_port,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .with_context(|| format!("open {}", self.log_file.display()))?;
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.conf)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", self.bin.display()))?;
        self.child = Some(child);
        self.wait_listening(Duration::from_secs(10))
    }

    fn wait_listening(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.exit_status() {
                bail!(
                    "nats-server exited at start-up ({status}); see {}",
                    self.log_file.display()
                );
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

    /// Starts the server again on the same ports and store after it exited or was killed.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    /// How it exited, once it has (`None` while it runs or after [`Self::kill`]).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exit_status().is_none()
    }

    /// Power-off: SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The server's monitoring endpoint (`/varz`, `/jsz`, ...).
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    /// The body of one monitoring endpoint, e.g. `/varz`.
    pub fn monitor_get(&self, path: &str) -> anyhow::Result<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.monitor_port))
            .context("connect to the nats-server monitoring port")?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let (head, body) = text
            .split_once("\r\n\r\n")
            .context("malformed monitoring answer")?;
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            bail!("{path}: {}", head.lines().next().unwrap_or_default());
        }
        Ok(body.to_string())
    }

    /// Stops the server with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            crate::process::terminate(&mut c, Duration::from_secs(5));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_are_read_from_the_version_line() {
        assert_eq!(
            super::parse_version("nats-server: v2.15.1\n"),
            Some((2, 15))
        );
        assert_eq!(super::parse_version("nats-server: v2.9.10"), Some((2, 9)));
        assert!(super::parse_version("nats-server: v2.9.10").unwrap() < super::MIN_VERSION);
        assert_eq!(super::parse_version("garbage"), None);
    }
}
