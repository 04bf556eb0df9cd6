//! vcoord's core: the model of a host, backends (simulator and libvirt), the snapshot policies
//! decide on, policy traits and registry, the guard, and the loop that ties them together.
//!
//! A tick is: [`backend::Backend::sample`] -> [`snapshot::SnapshotBuilder::build`] ->
//! [`policy::CpuPolicy::decide`] / [`policy::MemoryPolicy::decide`] -> [`guard::Guard::check`]
//! -> actuate -> [`record::TickRecord`]; see [`runtime::Coordinator::tick`].
//!
//! `unsafe` code is denied everywhere but in `backend::libvirt::ffi`.
#![deny(unsafe_code)]

pub mod backend;
pub mod bench;
pub mod compare;
pub mod config;
pub mod guard;
pub mod metrics;
pub mod model;
pub mod plot;
pub mod plugin;
pub mod policy;
pub mod record;
pub mod replay;
pub mod runtime;
pub mod sim;
pub mod snapshot;
pub mod source;
pub mod status;

pub use vcoord_api;
pub use vcoord_api::{cpuset, params, placement, stats, units};
