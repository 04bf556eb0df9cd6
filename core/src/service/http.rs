//! The read-only HTTP endpoint: `/metrics` (Prometheus text format), `/healthz` (200 while
//! every host ticks and no policy is quarantined, else 503 with one line per failing host) and
//! `/status.json` (what each host saw at its last tick, for `vcoord status`). Anything else is
//! 404; any method but GET and HEAD is 405: nothing is ever written through it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tiny_http::{Header, Method, Response, Server};
use tracing::{info, warn};

use super::control::Control;
use super::metrics::Metrics;
use super::status::StatusBoard;

/// A running endpoint; it stops when `control` asks for a stop.
#[derive(Debug)]
pub struct Endpoint {
    addr: SocketAddr,
    thread: JoinHandle<()>,
}

impl Endpoint {
    /// Serves `metrics` and `status` on `listen`.
    pub fn start(
        listen: SocketAddr,
        metrics: Arc<Metrics>,
        status: Arc<StatusBoard>,
        control: Control,
    ) -> std::io::Result<Self> {
        let server = Server::http(listen).map_err(std::io::Error::other)?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| std::io::Error::other("not an IP listener"))?;
        info!(%addr, "serving /metrics, /healthz and /status.json");
        let thread = std::thread::Builder::new()
            .name("metrics endpoint".into())
            .spawn(move || {
                while !control.stop_requested() {
                    match server.recv_timeout(Duration::from_millis(100)) {
                        Ok(Some(request)) => serve(request, &metrics, &status),
                        Ok(None) => {}
                        Err(e) => warn!(error = %e, "metrics endpoint"),
                    }
                }
            })?;
        Ok(Self { addr, thread })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for it to stop (after a stop request).
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("a valid header")
}

fn serve(request: tiny_http::Request, metrics: &Metrics, status: &StatusBoard) {
    let text = "text/plain; charset=utf-8";
    let (code, content_type, body) = match (request.method(), request.url()) {
        (Method::Get | Method::Head, "/metrics") => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.encode(),
        ),
        (Method::Get | Method::Head, "/healthz") => match metrics.health() {
            Ok(body) => (200, text, body),
            Err(body) => (503, text, body),
        },
        (Method::Get | Method::Head, "/status.json") => (200, "application/json", status.to_json()),
        (Method::Get | Method::Head, _) => (
            404,
            text,
            "not found: try /metrics, /healthz or /status.json\n".to_owned(),
        ),
        _ => (405, text, "read-only: GET or HEAD\n".to_owned()),
    };
    let mut response = Response::from_string(body)
        .with_status_code(code)
        .with_header(header("Content-Type", content_type));
    if code == 405 {
        response = response.with_header(header("Allow", "GET, HEAD"));
    }
    let _ = request.respond(response);
}
