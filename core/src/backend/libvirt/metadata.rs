//! The operator's settings in each domain's own metadata (see [`crate::vmcontrol`]), read when
//! a domain is first seen and then every [`REFRESH`], not every tick (one call per domain).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracing::{error, info};
use virt::error::ErrorNumber;
use virt::sys;

use super::LibvirtBackend;
use crate::model::VmSample;
use crate::vmcontrol::{parse_metadata, CpuSetting, Mode, VmSettings, METADATA_NS};

/// How often a domain's metadata is read again.
pub const REFRESH: Duration = Duration::from_secs(10);

/// What was read of each domain (by UUID), and when.
#[derive(Debug, Default)]
pub(super) struct MetadataCache {
    read: HashMap<String, (Instant, Read)>,
}

/// What one domain's metadata said.
#[derive(Clone, Debug, PartialEq)]
enum Read {
    /// No vcoord element.
    Nothing,
    /// Settings.
    Settings(VmSettings),
    /// An element vcoord cannot understand, and why: the VM is left alone entirely (the
    /// operator meant to say something about it).
    Unusable(String),
}

impl Read {
    fn settings(&self) -> Option<VmSettings> {
        match self {
            Read::Nothing => None,
            Read::Settings(s) => Some(s.clone()),
            Read::Unusable(_) => Some(VmSettings {
                cpu: Some(CpuSetting::Ignore),
                memory: Some(Mode::Ignore),
                ..VmSettings::default()
            }),
        }
    }
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
                if let Some(read) = self.read_metadata(&vm.name) {
                    let old = self.metadata.read.get(&vm.uuid).map(|(_, r)| r);
                    // Said once per change, not at every refresh.
                    if old != Some(&read) {
                        match &read {
                            Read::Nothing if old.is_some() => {
                                info!(vm = %crate::show::shown(&vm.name), "the domain's vcoord metadata was removed")
                            }
                            Read::Nothing => {}
                            Read::Settings(s) => {
                                info!(vm = %crate::show::shown(&vm.name), settings = ?s, "operator settings from the domain's metadata")
                            }
                            Read::Unusable(why) => {
                                error!(vm = %crate::show::shown(&vm.name), error = %why, "cannot understand vcoord's metadata of this domain: leaving it alone")
                            }
                        }
                    }
                    self.metadata
                        .read
                        .insert(vm.uuid.clone(), (Instant::now(), read));
                }
            }
            vm.metadata = self
                .metadata
                .read
                .get(&vm.uuid)
                .and_then(|(_, r)| r.settings());
        }
    }

    /// The domain's vcoord metadata; `None` when it could not be read this time (kept as it
    /// was).
    fn read_metadata(&mut self, name: &str) -> Option<Read> {
        self.calls.sample_calls += 2;
        let conn = self.live().ok()?;
        let dom = conn.lookup_domain_by_name(name).ok()?;
        match dom.metadata(
            sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
            Some(METADATA_NS),
            sys::VIR_DOMAIN_AFFECT_LIVE,
        ) {
            Ok(xml) => Some(match parse_metadata(&xml) {
                Ok(settings) => Read::Settings(settings),
                Err(why) => Read::Unusable(why),
            }),
            Err(e)
                if e.code()
                    .is_known_and(|c| c == ErrorNumber::NoDomainMetadata) =>
            {
                Some(Read::Nothing)
            }
            Err(_) => None,
        }
    }
}
