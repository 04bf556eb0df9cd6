//! The systemd notify protocol (sd_notify(3)): one datagram per state change to the socket
//! named by `$NOTIFY_SOCKET`. Without it (not started by systemd), every call does nothing.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use tracing::{debug, warn};

/// Where service state goes.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// A notifier for the socket in `$NOTIFY_SOCKET` (a path, or `@name` in the abstract
    /// namespace) with the watchdog period of `$WATCHDOG_USEC` (when `$WATCHDOG_PID` is unset or
    /// this process).
    pub fn from_env() -> Self {
        let socket = std::env::var("NOTIFY_SOCKET").ok();
        let watchdog_usec = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&us| us > 0);
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .is_none_or(|pid| pid == std::process::id());
        Self::new(
            socket.as_deref(),
            watchdog_usec.filter(|_| for_us).map(Duration::from_micros),
        )
    }

    /// A notifier for `socket` with a watchdog timeout.
    pub fn new(socket: Option<&str>, watchdog: Option<Duration>) -> Self {
        let target = socket.and_then(|name| {
            let addr = match name.strip_prefix('@') {
                Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name.as_bytes()),
                None => SocketAddr::from_pathname(name),
            };
            match (addr, UnixDatagram::unbound()) {
                (Ok(addr), Ok(sock)) => Some((sock, addr)),
                (Err(e), _) | (_, Err(e)) => {
                    warn!(socket = name, error = %e, "cannot use NOTIFY_SOCKET");
                    None
                }
            }
        });
        Self { target, watchdog }
    }

    /// Not started by a service manager: nothing is sent.
    pub fn none() -> Self {
        Self::new(None, None)
    }

    /// Whether a service manager listens.
    pub fn is_active(&self) -> bool {
        self.target.is_some()
    }

    /// How often to pet the watchdog (half its timeout), when there is one.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    /// Start-up is complete.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// A short human-readable state (shown by `systemctl status`).
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    /// The service is alive.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// A reload has begun; `ready` ends it.
    pub fn reloading(&self) {
        self.send("RELOADING=1");
    }

    /// The service is stopping.
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    fn send(&self, message: &str) {
        if let Some((sock, addr)) = &self.target {
            if let Err(e) = sock.send_to_addr(message.as_bytes(), addr) {
                debug!(error = %e, "notify socket send failed");
            }
        }
    }
}

/// `text` without line breaks (a newline would end the STATUS= field).
fn one_line(text: &str) -> String {
    text.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_arrive_at_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("vcoord-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.to_str(), Some(Duration::from_secs(10)));
        assert!(n.is_active());
        assert_eq!(n.watchdog_every(), Some(Duration::from_secs(5)));
        n.ready("1 host\nok");
        n.watchdog();
        let mut buf = [0u8; 256];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=1 host ok");
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn messages_arrive_at_an_abstract_socket() {
        let name = format!("vcoord-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::new(Some(&format!("@{name}")), None).stopping();
        let mut buf = [0u8; 64];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1");
    }

    #[test]
    fn without_a_socket_nothing_happens() {
        let n = Notifier::none();
        assert!(!n.is_active());
        n.ready("x");
        assert_eq!(n.watchdog_every(), None);
    }
}
