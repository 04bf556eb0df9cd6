//! vcoord's core, by role:
//!
//! - [`runtime`]: the loop ([`runtime::Coordinator::tick`]) and its stages: samples to
//!   [`runtime::snapshot`], decide (policies), [`runtime::guard`], actuate, [`runtime::record`].
//! - [`backend`]: where samples come from and actions go: [`backend::libvirt`] (any libvirt
//!   URI) and [`backend::sim`] (the embedded simulator), chosen by the host's URI.
//! - [`plugin`]: policies from `.so` files: finding, vetting and loading them, and supervising
//!   their calls.
//! - [`config`]: the configuration file, validated with every error located.
//! - [`service`]: `vcoord run` as a host service: supervising hosts, signals, reload, systemd
//!   notifications, one instance per host.
//! - [`tools`]: what the commands other than `run` do: compare, plot, replay, bench, status.
//!
//! The snapshot, plans, policy traits and parameters are vcoord-api's; [`model`] holds the raw
//! samples backends report. `unsafe` code is denied everywhere but in `backend::libvirt::ffi`.
//!
//! The modules are layers, each importing only from itself and those below it, and none in a
//! circle (`tests/layers.rs` checks every path): [`show`], [`source`], [`trust`], [`limits`]
//! (the leaves) < [`vmcontrol`] < [`model`] < [`policy`] < [`plugin`] < [`backend`] <
//! [`config`] < [`runtime`] < [`service`] < [`tools`] (the commands, which read what the
//! service serves).
#![deny(unsafe_code)]

pub mod backend;
pub mod config;
pub mod limits;
pub mod model;
pub mod plugin;
pub mod policy;
pub mod runtime;
pub mod service;
pub mod show;
pub mod source;
pub mod tools;
pub mod trust;
pub mod vmcontrol;

pub use vcoord_api;
pub use vcoord_api::{cpuset, params, placement, stats, units};
