//! The read-only HTTP endpoint: `/metrics` (Prometheus text format), `/healthz` (200 while
//! every host ticks and no policy is quarantined, else 503 with one line per failing host) and
//! `/status.json` (what each host saw at its last tick, for `vcoord status`). Anything else is
//! 404; any method but GET and HEAD is 405: nothing is ever written through it.
//!
//! It must stay up whatever clients do, on a budget of descriptors it shares with the rest of
//! the daemon. So it never gives a client a thread: one thread accepts, one serves every open
//! connection with non-blocking reads and writes. Each connection has [`DEADLINE`] from its
//! accept to its last byte out and sends at most [`MAX_REQUEST_BYTES`]; one request per
//! connection (`Connection: close`). At most [`max_connections`] are open at once: past that,
//! and whenever an accept fails for want of descriptors, the oldest ones still sending their
//! request are dropped. A client that sends its request with the connection is answered as it is
//! taken, before the connections queued behind it, so even a burst of new connections cannot
//! push it out; one that dribbles is the one that has waited longest. An accept error never ends the listener.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::metrics::Metrics;
use super::status::StatusBoard;
use crate::runtime::control::Control;

/// From accept to the last byte of the answer.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// The longest request head read; a longer one is answered 431.
pub const MAX_REQUEST_BYTES: usize = 8 << 10;

/// Connections open at once, at most.
const MAX_CONNECTIONS: usize = 64;

/// Descriptors left to the rest of the daemon (libvirt, the record, logs, plugins).
const RESERVED_FDS: u64 = 64;

/// How long the server sleeps when no connection made progress.
const IDLE_POLL: Duration = Duration::from_millis(5);

/// How often an accept error is logged at most.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// Connections open at once: `MAX_CONNECTIONS`, fewer when the descriptor limit is low
/// (half of what the limit leaves after `RESERVED_FDS`, at least 4).
pub fn max_connections() -> usize {
    let limit = open_files_limit().unwrap_or(1024);
    let room = limit.saturating_sub(RESERVED_FDS) / 2;
    (room as usize).clamp(4, MAX_CONNECTIONS)
}

/// The soft `RLIMIT_NOFILE` of this process, from `/proc/self/limits`.
fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.split_whitespace().nth(3)?;
    match soft {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    }
}

/// What the accepting thread hands to the serving one.
enum Incoming {
    /// A new connection.
    Connection(TcpStream),
    /// Accepting failed for want of descriptors: free some.
    Shed,
}

/// A running endpoint; it stops when `control` asks for a stop.
#[derive(Debug)]
pub struct Endpoint {
    addr: SocketAddr,
    accept: JoinHandle<()>,
    serve: JoinHandle<()>,
}

impl Endpoint {
    /// Serves `metrics` and `status` on `listen`.
    pub fn start(
        listen: SocketAddr,
        metrics: Arc<Metrics>,
        status: Arc<StatusBoard>,
        control: Control,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let limit = max_connections();
        info!(%addr, max_connections = limit, "serving /metrics, /healthz and /status.json");
        let (tx, rx) = mpsc::channel();
        let accept = {
            let control = control.clone();
            std::thread::Builder::new()
                .name("metrics accept".into())
                .spawn(move || accept_loop(&listener, &tx, &control))?
        };
        let serve = std::thread::Builder::new()
            .name("metrics endpoint".into())
            .spawn(move || {
                Server {
                    incoming: rx,
                    open: Vec::new(),
                    limit,
                    metrics,
                    status,
                }
                .run(&control)
            })?;
        Ok(Self {
            addr,
            accept,
            serve,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for it to stop (after a stop request).
    pub fn join(self) {
        // The accepting thread waits in accept(): a connection wakes it to see the stop.
        let _ = TcpStream::connect_timeout(&wake_addr(self.addr), Duration::from_secs(1));
        let _ = self.accept.join();
        let _ = self.serve.join();
    }
}

/// Where to connect to reach a listener on `addr` (an unspecified address means every one).
fn wake_addr(addr: SocketAddr) -> SocketAddr {
    let mut to = addr;
    if to.ip().is_unspecified() {
        to.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    to
}

fn accept_loop(listener: &TcpListener, to_server: &Sender<Incoming>, control: &Control) {
    let mut last_logged: Option<Instant> = None;
    let mut held_back = 0u64;
    while !control.stop_requested() {
        match listener.accept() {
            Ok((stream, _)) => {
                if stream.set_nonblocking(true).is_ok()
                    && to_server.send(Incoming::Connection(stream)).is_err()
                {
                    return;
                }
            }
            Err(e) => {
                let out_of_fds = matches!(e.raw_os_error(), Some(23 | 24)); // ENFILE, EMFILE
                if out_of_fds && to_server.send(Incoming::Shed).is_err() {
                    return;
                }
                if last_logged.is_none_or(|t| t.elapsed() >= ERROR_LOG_EVERY) {
                    warn!(error = %e, held_back, "metrics endpoint: accept failed; still listening");
                    last_logged = Some(Instant::now());
                    held_back = 0;
                } else {
                    held_back += 1;
                }
                // Let the server free descriptors (or the cause pass) before trying again.
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// One open connection.
struct Connection {
    stream: TcpStream,
    accepted: Instant,
    request: Vec<u8>,
    /// The answer once the request is read, and how much of it is out.
    answer: Option<(Vec<u8>, usize)>,
}

/// What one step of a connection came to.
#[derive(PartialEq)]
enum Step {
    /// Bytes moved; it goes on.
    Progress,
    /// Nothing to do now.
    Waiting,
    /// Done, failed or too late: close it.
    Close,
}

struct Server {
    incoming: Receiver<Incoming>,
    /// Oldest first.
    open: Vec<Connection>,
    limit: usize,
    metrics: Arc<Metrics>,
    status: Arc<StatusBoard>,
}

impl Server {
    fn run(mut self, control: &Control) {
        while !control.stop_requested() {
            if self.open.is_empty() {
                match self.incoming.recv_timeout(Duration::from_millis(200)) {
                    Ok(msg) => self.take(msg),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            loop {
                match self.incoming.try_recv() {
                    Ok(msg) => self.take(msg),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            let mut progressed = false;
            let mut open = std::mem::take(&mut self.open);
            open.retain_mut(|c| match self.step(c) {
                Step::Progress => {
                    progressed = true;
                    true
                }
                Step::Waiting => true,
                Step::Close => false,
            });
            self.open = open;
            if !progressed {
                std::thread::sleep(IDLE_POLL);
            }
        }
    }

    fn take(&mut self, msg: Incoming) {
        match msg {
            Incoming::Connection(stream) => {
                let mut c = Connection {
                    stream,
                    accepted: Instant::now(),
                    request: Vec::new(),
                    answer: None,
                };
                // A client that sent its request with the connection is answered now, before
                // the connections queued behind it are taken: a burst of new ones cannot push
                // it out while it waits for its turn.
                loop {
                    match self.step(&mut c) {
                        Step::Close => return,
                        Step::Waiting => break,
                        Step::Progress => {}
                    }
                }
                if self.open.len() >= self.limit {
                    // The oldest of those still sending their request (answers being written
                    // are nearly done).
                    let victim = self
                        .open
                        .iter()
                        .position(|c| c.answer.is_none())
                        .unwrap_or(0);
                    self.open.remove(victim);
                }
                self.open.push(c);
            }
            Incoming::Shed => {
                let drop = self.open.len().div_ceil(2);
                self.open.drain(..drop);
            }
        }
    }

    fn step(&self, c: &mut Connection) -> Step {
        if c.accepted.elapsed() > DEADLINE {
            return Step::Close;
        }
        match &mut c.answer {
            None => {
                let mut buf = [0u8; 2048];
                match c.stream.read(&mut buf) {
                    Ok(0) => Step::Close,
                    Ok(n) => {
                        c.request.extend_from_slice(&buf[..n]);
                        if let Some(answer) = self.answer_to(&c.request) {
                            c.answer = Some((answer, 0));
                        }
                        Step::Progress
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => Step::Waiting,
                    Err(e) if e.kind() == ErrorKind::Interrupted => Step::Progress,
                    Err(_) => Step::Close,
                }
            }
            Some((answer, sent)) => match c.stream.write(&answer[*sent..]) {
                Ok(n) => {
                    *sent += n;
                    if *sent >= answer.len() {
                        let _ = c.stream.shutdown(std::net::Shutdown::Write);
                        Step::Close
                    } else {
                        Step::Progress
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => Step::Waiting,
                Err(e) if e.kind() == ErrorKind::Interrupted => Step::Progress,
                Err(_) => Step::Close,
            },
        }
    }

    /// The whole answer once `request` holds a whole head (or is too long or malformed).
    fn answer_to(&self, request: &[u8]) -> Option<Vec<u8>> {
        let Some(end) = find(request, b"\r\n\r\n").or_else(|| find(request, b"\n\n")) else {
            return (request.len() >= MAX_REQUEST_BYTES)
                .then(|| response(431, TEXT, "request head too large\n".into(), false, None));
        };
        let head = String::from_utf8_lossy(&request[..end]);
        let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
        let (Some(method), Some(target), Some(version)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Some(response(400, TEXT, "bad request\n".into(), false, None));
        };
        if !version.starts_with("HTTP/1.") {
            return Some(response(400, TEXT, "HTTP/1.x only\n".into(), false, None));
        }
        let path = target.split('?').next().unwrap_or_default();
        let head_only = method == "HEAD";
        if method != "GET" && !head_only {
            return Some(response(
                405,
                TEXT,
                "read-only: GET or HEAD\n".into(),
                false,
                Some("GET, HEAD"),
            ));
        }
        let (code, content_type, body) = match path {
            "/metrics" => (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.encode(),
            ),
            "/healthz" => match self.metrics.health() {
                Ok(body) => (200, TEXT, body),
                Err(body) => (503, TEXT, body),
            },
            "/status.json" => (200, "application/json", self.status.to_json()),
            _ => (
                404,
                TEXT,
                "not found: try /metrics, /healthz or /status.json\n".to_owned(),
            ),
        };
        Some(response(code, content_type, body, head_only, None))
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn response(
    code: u16,
    content_type: &str,
    body: String,
    head_only: bool,
    allow: Option<&str>,
) -> Vec<u8> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(methods) = allow {
        out.push_str(&format!("Allow: {methods}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(body.as_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_limit_follows_the_descriptor_limit() {
        let n = max_connections();
        assert!((4..=MAX_CONNECTIONS).contains(&n), "{n}");
        assert!(open_files_limit().is_some());
    }

    #[test]
    fn answers_are_whole_http_responses() {
        let r = String::from_utf8(response(405, TEXT, "no\n".into(), false, Some("GET, HEAD")))
            .unwrap();
        assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{r}");
        assert!(r.contains("Content-Length: 3\r\n") && r.contains("Allow: GET, HEAD\r\n"));
        assert!(r.ends_with("\r\n\r\nno\n"));
        let head = String::from_utf8(response(200, TEXT, "body".into(), true, None)).unwrap();
        assert!(head.contains("Content-Length: 4") && head.ends_with("\r\n\r\n"));
    }
}
