//! What the commands other than `run` do, on top of the runtime and the backends.

pub mod bench;
pub mod compare;
pub mod derive;
pub mod metrics;
pub mod plot;
pub mod replay;
pub mod report;
pub mod stats;
pub mod status;
pub mod study;
pub mod trace;
