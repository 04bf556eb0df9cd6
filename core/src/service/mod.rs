//! Running as a host service: the daemon that supervises every host ([`daemon`]), stop and
//! reload requests from signals ([`control`]), the systemd notify protocol ([`notify`]) and
//! one instance per host ([`lock`]), and what it shows of itself: Prometheus metrics and health
//! ([`metrics`]), the last snapshot of each host ([`status`]), served over HTTP ([`http`]).

pub mod control;
pub mod daemon;
pub mod http;
pub mod lock;
pub mod metrics;
pub mod notify;
pub mod status;
