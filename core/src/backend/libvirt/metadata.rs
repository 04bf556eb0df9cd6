//! The operator's settings in each domain's own metadata (see [`crate::vmcontrol`]), read when
//! a domain is first seen and then every [`REFRESH`], not every tick (one call per domain).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracing::{error, info};
use virt::error::ErrorNumber;
use virt::sys;

use super::LibvirtBackend;
use crate::model::VmSample;
use crate::vmcontrol::{parse_metadata, Mode, VmSettings, METADATA_NS};

/// How often a domain's metadata is read again.
pub const REFRESH: Duration = Duration::from_secs(30);

/// What was read of each domain (by UUID), and when.
#[derive(Debug, Default)]
pub(super) struct MetadataCache {
    read: HashMap<String, (Instant, Option<VmSettings>)>,
}

impl LibvirtBackend {
    /// Fills in each VM's metadata settings, reading those that are new or due.
    pub(super) fn attach_metadata(&mut self, vms: &mut [VmSample]) {
        let uuids: Vec<&str> = vms.iter().map(|v| v.uuid.as_str()).collect();
        self.metadata
            .read
            .retain(|uuid, _| uuids.contains(&uuid.as_str()));
        for vm in vms.iter_mut() {
            let due = self
                .metadata
                .read
                .get(&vm.uuid)
                .is_none_or(|(at, _)| at.elapsed() >= REFRESH);
            if due {
                if let Some(settings) = self.read_metadata(&vm.name) {
                    let old = self.metadata.read.get(&vm.uuid).map(|(_, s)| s.clone());
                    if old.as_ref() != Some(&settings) {
                        if let Some(s) = &settings {
                            info!(vm = %vm.name, settings = ?s, "operator settings from the domain's metadata");
                        }
                    }
                    self.metadata
                        .read
                        .insert(vm.uuid.clone(), (Instant::now(), settings));
                }
            }
            vm.metadata = self
                .metadata
                .read
                .get(&vm.uuid)
                .and_then(|(_, s)| s.clone());
        }
    }

    /// The domain's vcoord metadata: `Some(None)` when it has none, `None` when it could not be
    /// read this time (kept as it was). Metadata that cannot be understood leaves the VM alone
    /// entirely: the operator meant to say something about it.
    fn read_metadata(&mut self, name: &str) -> Option<Option<VmSettings>> {
        self.calls.sample_calls += 2;
        let conn = self.live().ok()?;
        let dom = conn.lookup_domain_by_name(name).ok()?;
        match dom.metadata(
            sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
            Some(METADATA_NS),
            sys::VIR_DOMAIN_AFFECT_LIVE,
        ) {
            Ok(xml) => match parse_metadata(&xml) {
                Ok(settings) => Some(Some(settings)),
                Err(why) => {
                    error!(vm = %name, error = %why, "cannot understand vcoord's metadata of this domain: leaving it alone");
                    Some(Some(VmSettings {
                        cpu: Some(Mode::Ignore),
                        memory: Some(Mode::Ignore),
                        ..VmSettings::default()
                    }))
                }
            },
            Err(e)
                if e.code()
                    .is_known_and(|c| c == ErrorNumber::NoDomainMetadata) =>
            {
                Some(None)
            }
            Err(_) => None,
        }
    }
}
