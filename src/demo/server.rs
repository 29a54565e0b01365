//! A local nats-server for the demo: found on `NATS_SERVER_BIN`, on PATH, or
//! in the project's `.tools/` (where `make` installs it), started on a free
//! loopback port with JetStream on (for a config with `nats.jetstream`) in its
//! own temporary directory, killed on drop.

use anyhow::{bail, Context};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NatsServer {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

/// Where the nats-server binary is, if anywhere.
pub fn find_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN").map(PathBuf::from).filter(|p| p.is_file()) {
        return Some(p);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        if let Some(p) = std::env::split_paths(&paths).map(|d| d.join("nats-server")).find(|p| p.is_file()) {
            return Some(p);
        }
    }
    let local = PathBuf::from(".tools/venv/bin/nats-server");
    local.is_file().then_some(local)
}

impl NatsServer {
    pub fn start() -> anyhow::Result<NatsServer> {
        let bin = find_binary().context("no nats-server found: set NATS_SERVER_BIN, put nats-server on PATH, or run `make tools`")?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = tempfile::tempdir()?;
        let log = std::fs::File::create(dir.path().join("nats.log"))?;
        let store = dir.path().join("jetstream");
        let child = Command::new(&bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&store)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut server = NatsServer { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline || server.child.try_wait()?.is_some() {
                bail!("nats-server did not start on port {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
