//! libvirt backend (placeholder while the core builds).
use super::{Backend, BackendError};
use crate::cpuset::CpuSet;
use crate::model::Sample;
use std::time::Duration;

/// A libvirt connection.
pub struct LibvirtBackend;

impl LibvirtBackend {
    /// Connects.
    pub fn connect(uri: &str) -> Result<Self, BackendError> {
        Err(BackendError::Connection {
            uri: uri.into(),
            message: "not yet".into(),
        })
    }
}

impl Backend for LibvirtBackend {
    fn describe(&self) -> String {
        String::new()
    }
    fn sample(&mut self) -> Result<Sample, BackendError> {
        unimplemented!()
    }
    fn pin_vcpu(&mut self, _: &str, _: u32, _: &CpuSet) -> Result<(), BackendError> {
        unimplemented!()
    }
    fn set_balloon_target(&mut self, _: &str, _: u64) -> Result<(), BackendError> {
        unimplemented!()
    }
    fn set_memory_stats_period(&mut self, _: &str, _: u32) -> Result<(), BackendError> {
        unimplemented!()
    }
    fn wait(&mut self, _: Duration) {}
}
