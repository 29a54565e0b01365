//! A local nats-server for the live and latency benches: started on random
//! loopback ports (`-p -1`, monitoring on `-m -1`, read back from its ports
//! file), killed and cleaned up on drop.
//!
//! `max_pending` is raised from 64 MiB to 1 GiB so that a burst the consumer
//! has not read yet waits in the server instead of being dropped: the
//! throughput bench measures how fast a consumer drains, and a drop is
//! reported as loss, not hidden in a lower rate.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NatsServer {
    child: Child,
    pub url: String,
    monitor: String,
    _dir: tempfile::TempDir,
}

/// `$NATS_SERVER_BIN`, else `nats-server` on PATH, else the copy `make tools` installs.
pub fn binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH").and_then(|path| std::env::split_paths(&path).map(|d| d.join("nats-server")).find(|p| p.is_file()));
    if let Some(p) = on_path {
        return Ok(p);
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/bin/nats-server");
    if local.is_file() {
        return Ok(local);
    }
    bail!("nats-server not found: set NATS_SERVER_BIN, put it on PATH, or run `make tools`")
}

impl NatsServer {
    pub fn start(bin: &Path) -> anyhow::Result<NatsServer> {
        let dir = tempfile::Builder::new().prefix("journeyd-bench-nats-").tempdir()?;
        let conf = dir.path().join("server.conf");
        std::fs::write(&conf, "max_pending: 1GB\n")?;
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let child = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", "-1", "-m", "-1", "-c"])
            .arg(&conf)
            .arg("--ports_file_dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let ports = dir.path().join(format!("{}_{}.ports", bin.file_name().and_then(|n| n.to_str()).unwrap_or("nats-server"), child.id()));
        let mut server = NatsServer { child, url: String::new(), monitor: String::new(), _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ports) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    let first = |k: &str| v[k][0].as_str().map(str::to_string);
                    if let (Some(url), Some(mon)) = (first("nats"), first("monitoring")) {
                        server.url = url;
                        server.monitor = mon.trim_start_matches("http://").to_string();
                        return Ok(server);
                    }
                }
            }
            if let Some(status) = server.child.try_wait()? {
                bail!("nats-server exited with {status} before it was ready");
            }
            if Instant::now() > deadline {
                bail!("nats-server did not write its ports file within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Slow consumers the server has counted so far (`/varz`): clients it
    /// dropped messages for because they did not read fast enough.
    pub fn slow_consumers(&self) -> u64 {
        http_get(&self.monitor, "/varz")
            .ok()
            .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
            .and_then(|v| v["slow_consumers"].as_u64())
            .unwrap_or(0)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking HTTP/1.0 GET on loopback; returns the body.
pub fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200") => Ok(body.to_string()),
        _ => bail!("GET {path} on {addr}: {}", text.lines().next().unwrap_or("no response")),
    }
}
