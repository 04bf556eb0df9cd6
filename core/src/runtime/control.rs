//! Stop and reload requests. SIGTERM and SIGINT ask the daemon to stop after the tick in
//! progress (a second one ends the process at once); SIGHUP asks it to re-read its
//! configuration. Handlers only set flags; the loops look at them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// How often an interrupted sleep looks at the stop flag.
const POLL: Duration = Duration::from_millis(20);

/// Shared stop and reload flags.
#[derive(Clone, Debug, Default)]
pub struct Control {
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
}

impl Control {
    /// Flags nobody sets but the program itself (tests, tools).
    pub fn new() -> Self {
        Self::default()
    }

    /// Flags set by SIGTERM/SIGINT (stop) and SIGHUP (reload).
    pub fn with_signals() -> std::io::Result<Self> {
        let control = Self::new();
        for signal in [SIGTERM, SIGINT] {
            // A second stop signal while stopping ends the process at once (exit code 1).
            signal_hook::flag::register_conditional_shutdown(signal, 1, control.stop.clone())?;
            signal_hook::flag::register(signal, control.stop.clone())?;
        }
        signal_hook::flag::register(SIGHUP, control.reload.clone())?;
        Ok(control)
    }

    /// Asks every loop to stop.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Asks for a reload.
    pub fn request_reload(&self) {
        self.reload.store(true, Ordering::SeqCst);
    }

    /// Whether a reload was asked for since the last call (clears the request).
    pub fn take_reload(&self) -> bool {
        self.reload.swap(false, Ordering::SeqCst)
    }

    /// Sleeps for `duration`, or less if a stop is asked for. Returns false when stopping.
    pub fn sleep(&self, duration: Duration) -> bool {
        let until = Instant::now() + duration;
        loop {
            if self.stop_requested() {
                return false;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(POLL));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_cuts_a_sleep_short() {
        let c = Control::new();
        let other = c.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            other.request_stop();
        });
        let started = Instant::now();
        assert!(!c.sleep(Duration::from_secs(30)));
        assert!(started.elapsed() < Duration::from_secs(10));
        t.join().unwrap();
        assert!(c.stop_requested());
    }

    #[test]
    fn a_reload_is_taken_once() {
        let c = Control::new();
        assert!(!c.take_reload());
        c.request_reload();
        assert!(c.take_reload());
        assert!(!c.take_reload());
    }
}
