//! Running as a host service: the daemon that supervises every host ([`daemon`]), stop and
//! reload requests from signals ([`control`]), the systemd notify protocol ([`notify`]) and
//! one instance per host ([`lock`]).

pub mod control;
pub mod daemon;
pub mod lock;
pub mod notify;
