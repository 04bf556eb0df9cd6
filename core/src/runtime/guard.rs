//! Safety checks between a policy's plan and the backend: whatever a policy asks, only pins to
//! existing pCPUs and balloon targets that neither starve a guest nor eat the host's reserve get
//! through. Everything refused or trimmed is reported with the reason.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

pub use crate::limits::{GuardSettings, PERIOD_US, QUOTA_US, SHARES};
use crate::policy::{CpuPlan, MemoryPlan, VcpuPin, VmTune};
use crate::runtime::snapshot::{Snapshot, VmView};
use vcoord_api::dedicated::{dedicate, Dedication};
use vcoord_api::plan::{KsmPlan, KSM_CHANGE_INTERVAL_S, KSM_PAGES_TO_SCAN, KSM_SLEEP_MS};
use vcoord_api::snapshot::{CpuTune, Placement, DEFAULT_PERIOD_US};

use crate::units::KIB_PER_MIB as MIB;

/// A balloon change that passed the guard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BalloonChange {
    /// Domain name.
    pub vm: String,
    /// Memory it has now.
    pub actual_kib: u64,
    /// Memory it should have.
    pub target_kib: u64,
    /// The policy's reason, plus the guard's note when it trimmed the target.
    pub reason: String,
}

/// Why the guard refused or trimmed an action: the `reason` label of
/// `vcoord_guard_refusals_total`, and what repeated warnings are counted by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// The operator set the VM's CPU or memory to ignore.
    OperatorIgnore,
    /// Grants were cut to what the host has above its reserve.
    HostReserve,
    /// A target was moved within the floor, the shrink margin or the VM's bounds.
    Trimmed,
    /// No such domain on the host.
    UnknownVm,
    /// A pin to no pCPU, to a pCPU the host lacks, or of a vCPU the domain lacks.
    BadPin,
    /// A balloon target for a guest without fresh memory statistics.
    StaleStats,
    /// The same vCPU or domain twice in one plan.
    Duplicate,
    /// A negative balloon target.
    BadTarget,
    /// A target beyond what a VM with virtio-mem can ever have (boot memory plus devices).
    BeyondDevice,
    /// The domain is in the middle of a job (migration, dump, snapshot) or not running.
    Busy,
    /// A CPU weight outside the bounds the host's scheduler takes.
    BadWeight,
    /// A vCPU quota or period outside the bounds the host's scheduler takes.
    BadQuota,
    /// A quota that would hold a VM below its operator's CPU minimum.
    BelowMinimum,
    /// A pin against the operator's placement (a set for a VM to be pinned one to one).
    OperatorPlacement,
    /// A vCPU or emulator thread of another VM put on a dedicated VM's pCPU.
    Dedicated,
    /// A KSM change on a host whose operator runs KSM (`ksm = "leave"`) or where it cannot be
    /// read.
    KsmLeft,
    /// A KSM change sooner than [`KSM_CHANGE_INTERVAL_S`] after the last one.
    TooSoon,
    /// Read from a record that did not say.
    #[default]
    Other,
}

impl Refusal {
    /// Every refusal, in the order metrics list them.
    pub const ALL: [Refusal; 18] = [
        Refusal::OperatorIgnore,
        Refusal::HostReserve,
        Refusal::Trimmed,
        Refusal::UnknownVm,
        Refusal::BadPin,
        Refusal::StaleStats,
        Refusal::Duplicate,
        Refusal::BadTarget,
        Refusal::BeyondDevice,
        Refusal::Busy,
        Refusal::BadWeight,
        Refusal::BadQuota,
        Refusal::BelowMinimum,
        Refusal::OperatorPlacement,
        Refusal::Dedicated,
        Refusal::KsmLeft,
        Refusal::TooSoon,
        Refusal::Other,
    ];

    /// Its metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::OperatorIgnore => "operator_ignore",
            Refusal::HostReserve => "host_reserve",
            Refusal::Trimmed => "trimmed",
            Refusal::UnknownVm => "unknown_vm",
            Refusal::BadPin => "bad_pin",
            Refusal::StaleStats => "stale_stats",
            Refusal::Duplicate => "duplicate",
            Refusal::BadTarget => "bad_target",
            Refusal::BeyondDevice => "beyond_device",
            Refusal::Busy => "busy",
            Refusal::BadWeight => "bad_weight",
            Refusal::BadQuota => "bad_quota",
            Refusal::BelowMinimum => "below_minimum",
            Refusal::OperatorPlacement => "operator_placement",
            Refusal::Dedicated => "dedicated",
            Refusal::KsmLeft => "ksm_left",
            Refusal::TooSoon => "too_soon",
            Refusal::Other => "other",
        }
    }
}

/// An action the guard refused, or trimmed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    /// The action as the policy asked it.
    pub action: String,
    /// Why it was refused or trimmed.
    pub why: String,
    /// ... as a kind.
    #[serde(default)]
    pub reason: Refusal,
    /// The domain the action was for.
    #[serde(default)]
    pub vm: String,
}

/// The part of the plans that may be carried out.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GuardedPlan {
    /// Pins that passed.
    pub pins: Vec<VcpuPin>,
    /// CPU tunes that passed (possibly trimmed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tunes: Vec<VmTune>,
    /// Balloon changes that passed (possibly trimmed).
    pub balloons: Vec<BalloonChange>,
    /// KSM's settings to write, where the plan changes them and the guard let it (possibly
    /// trimmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ksm: Option<KsmPlan>,
    /// Refused or trimmed actions.
    pub rejected: Vec<Rejection>,
}

/// Checks plans against a snapshot.
#[derive(Clone, Debug, Default)]
pub struct Guard {
    settings: GuardSettings,
    /// When KSM's settings were last let through (snapshot wall time, s).
    ksm_changed_s: Option<f64>,
}

impl Guard {
    /// A guard with these limits.
    pub fn new(settings: GuardSettings) -> Self {
        Self {
            settings,
            ksm_changed_s: None,
        }
    }

    /// Filters both plans.
    pub fn check(
        &mut self,
        snapshot: &Snapshot,
        cpu: &CpuPlan,
        memory: &MemoryPlan,
    ) -> GuardedPlan {
        let mut out = GuardedPlan::default();
        let dedication = dedicate(snapshot);
        self.check_pins(snapshot, &dedication, cpu, &mut out);
        check_tunes(snapshot, &dedication, cpu, &mut out);
        self.check_balloons(snapshot, memory, &mut out);
        if let Some(ksm) = memory.ksm {
            out.ksm = self.check_ksm(snapshot, ksm, &mut out.rejected);
        }
        out
    }

    /// A KSM change passes on a host whose KSM the plans may drive, at most once in
    /// [`KSM_CHANGE_INTERVAL_S`], its scan settings trimmed into [`KSM_PAGES_TO_SCAN`] and
    /// [`KSM_SLEEP_MS`]; settings the host already has are nothing to do.
    fn check_ksm(
        &mut self,
        snapshot: &Snapshot,
        plan: KsmPlan,
        rejected: &mut Vec<Rejection>,
    ) -> Option<KsmPlan> {
        let action = format!(
            "set KSM to run={} pages_to_scan={} sleep_millisecs={}",
            u8::from(plan.run),
            plan.pages_to_scan,
            plan.sleep_ms
        );
        let rejection = |reason: Refusal, why: String| Rejection {
            action: action.clone(),
            why,
            reason,
            vm: String::new(),
        };
        let Some(view) = snapshot.host().ksm.as_ref() else {
            rejected.push(rejection(
                Refusal::KsmLeft,
                "KSM is not read on this host".into(),
            ));
            return None;
        };
        if !view.managed {
            rejected.push(rejection(
                Refusal::KsmLeft,
                "the operator runs KSM on this host (ksm = \"leave\")".into(),
            ));
            return None;
        }
        let trimmed = KsmPlan {
            run: plan.run,
            pages_to_scan: plan
                .pages_to_scan
                .clamp(*KSM_PAGES_TO_SCAN.start(), *KSM_PAGES_TO_SCAN.end()),
            sleep_ms: plan
                .sleep_ms
                .clamp(*KSM_SLEEP_MS.start(), *KSM_SLEEP_MS.end()),
        };
        if trimmed == view.settings() {
            return None;
        }
        let now = snapshot.wall_s();
        if let Some(at) = self
            .ksm_changed_s
            .filter(|&at| (0.0..KSM_CHANGE_INTERVAL_S).contains(&(now - at)))
        {
            rejected.push(rejection(
                Refusal::TooSoon,
                format!(
                    "KSM was changed {:.0} s ago, at most once in {KSM_CHANGE_INTERVAL_S:.0} s",
                    now - at
                ),
            ));
            return None;
        }
        if trimmed != plan {
            rejected.push(rejection(
                Refusal::Trimmed,
                format!(
                    "scan settings kept within pages_to_scan {}-{} and sleep_millisecs {}-{}",
                    KSM_PAGES_TO_SCAN.start(),
                    KSM_PAGES_TO_SCAN.end(),
                    KSM_SLEEP_MS.start(),
                    KSM_SLEEP_MS.end()
                ),
            ));
        }
        self.ksm_changed_s = Some(now);
        Some(trimmed)
    }

    fn check_pins(
        &self,
        snapshot: &Snapshot,
        dedication: &Dedication,
        plan: &CpuPlan,
        out: &mut GuardedPlan,
    ) {
        let mut seen = HashSet::new();
        for pin in &plan.pins {
            let reject = |reason: Refusal, why: String| Rejection {
                action: format!("pin {}/vcpu{} to {{{}}}", pin.vm, pin.vcpu, pin.cpus),
                why,
                reason,
                vm: pin.vm.clone(),
            };
            let vm = match cpu_managed_vm(snapshot, &pin.vm) {
                Ok(vm) => vm,
                Err((reason, why)) => {
                    out.rejected.push(reject(reason, why));
                    continue;
                }
            };
            if !vm.vcpus.iter().any(|v| v.id == pin.vcpu) {
                out.rejected.push(reject(
                    Refusal::BadPin,
                    format!("domain has no vCPU {}", pin.vcpu),
                ));
                continue;
            }
            if pin.cpus.is_empty() {
                out.rejected
                    .push(reject(Refusal::BadPin, "empty pCPU set".into()));
                continue;
            }
            if let Some(bad) = pin.cpus.iter().find(|&c| snapshot.pcpu_index(c).is_none()) {
                out.rejected.push(reject(
                    Refusal::BadPin,
                    format!("pCPU {bad} does not exist on this host"),
                ));
                continue;
            }
            if vm.control.placement == Some(Placement::Pin) && pin.cpus.len() > 1 {
                out.rejected.push(reject(
                    Refusal::OperatorPlacement,
                    "the operator set this VM to be pinned one vCPU to one pCPU".into(),
                ));
                continue;
            }
            // A dedicated pCPU is its VM's alone: nothing else is put there, and its own vCPUs
            // go nowhere else.
            let own = dedication.of(&pin.vm);
            let index = vm.vcpus.iter().position(|v| v.id == pin.vcpu);
            let intrudes = match own.zip(index).and_then(|(own, i)| own.get(i)) {
                Some(&mine) => (pin.cpus.only() != Some(mine)).then(|| {
                    format!(
                        "vCPU {} of this dedicated VM is pCPU {mine}'s alone",
                        pin.vcpu
                    )
                }),
                None => pin
                    .cpus
                    .iter()
                    .find(|&c| dedication.is_reserved(c))
                    .map(|c| {
                        let owner = dedication
                            .vms
                            .iter()
                            .find(|(_, pcpus)| pcpus.contains(&c))
                            .map_or("a dedicated VM", |(vm, _)| vm.as_str());
                        format!("pCPU {c} is dedicated to {owner} (or its core is)")
                    }),
            };
            if let Some(why) = intrudes {
                out.rejected.push(reject(Refusal::Dedicated, why));
                continue;
            }
            if !seen.insert((pin.vm.as_str(), pin.vcpu)) {
                out.rejected.push(reject(
                    Refusal::Duplicate,
                    "vCPU pinned twice in one plan".into(),
                ));
                continue;
            }
            out.pins.push(pin.clone());
        }
    }

    fn check_balloons(&self, snapshot: &Snapshot, plan: &MemoryPlan, out: &mut GuardedPlan) {
        let floor_kib = self.settings.guest_floor_mib * MIB;
        let margin_kib = self.settings.shrink_margin_mib * MIB;
        let mut seen = HashSet::new();
        let mut changes = Vec::new();
        for target in &plan.targets {
            let action = format!(
                "set {} to {} MiB",
                target.vm,
                target.target_kib / MIB as i64
            );
            let reject = |reason: Refusal, why: String| Rejection {
                action: action.clone(),
                why,
                reason,
                vm: target.vm.clone(),
            };
            let Some(vm) = snapshot.vm(&target.vm) else {
                out.rejected
                    .push(reject(Refusal::UnknownVm, "no such domain".into()));
                continue;
            };
            if target.target_kib < 0 {
                out.rejected
                    .push(reject(Refusal::BadTarget, "negative target".into()));
                continue;
            }
            if !vm.control.memory_managed {
                out.rejected.push(reject(
                    Refusal::OperatorIgnore,
                    "the operator set this VM's memory to ignore".into(),
                ));
                continue;
            }
            if !vm.memory.stats_fresh {
                out.rejected.push(reject(
                    Refusal::StaleStats,
                    "no fresh guest memory statistics".into(),
                ));
                continue;
            }
            if !seen.insert(target.vm.as_str()) {
                out.rejected.push(reject(
                    Refusal::Duplicate,
                    "domain targeted twice in one plan".into(),
                ));
                continue;
            }
            let actual = vm.memory.actual_kib;
            let asked = target.target_kib as u64;
            if !vm.memory.virtio_mem.is_empty() && asked > vm.memory.max_kib {
                let boot = vm.memory.boot_kib();
                out.rejected.push(reject(
                    Refusal::BeyondDevice,
                    format!(
                        "more than the domain can have: {} MiB booted + {} MiB of virtio-mem",
                        boot / MIB,
                        (vm.memory.max_kib - boot) / MIB
                    ),
                ));
                continue;
            }
            // The operator's bounds: never larger than their max (or than a held virtio-mem
            // device lets it have), never made smaller than their min (a VM already outside
            // them is only moved toward them).
            let reachable = vm.memory.reachable_max_kib();
            let max_kib = vm.control.max_kib.map_or(reachable, |m| m.min(reachable));
            let min_kib = vm.control.min_kib.unwrap_or(0);
            let mut allowed = asked.min(max_kib.max(actual.min(asked)));
            if allowed < actual {
                // A shrink stops at the floor, at the operator's min and short of what the guest
                // uses; it never turns into a grow.
                let used = vm.memory.used_kib().unwrap_or(actual);
                let lowest = floor_kib.max(min_kib).max(used + margin_kib).min(actual);
                allowed = allowed.max(lowest);
            }
            if allowed != asked {
                out.rejected.push(reject(
                    Refusal::Trimmed,
                    format!(
                        "trimmed to {} MiB (floor {} MiB, shrink margin {} MiB, max {} MiB{})",
                        allowed / MIB,
                        self.settings.guest_floor_mib,
                        self.settings.shrink_margin_mib,
                        max_kib / MIB,
                        if min_kib > 0 {
                            format!(", operator's min {} MiB", min_kib / MIB)
                        } else {
                            String::new()
                        }
                    ),
                ));
            }
            if allowed != actual {
                changes.push(BalloonChange {
                    vm: target.vm.clone(),
                    actual_kib: actual,
                    target_kib: allowed,
                    reason: target.reason.clone(),
                });
            }
        }
        // Grants come out of what guests may have above the reserve. Memory released this tick
        // counts only once the host sees it free (next tick): balloons take time to inflate.
        let headroom_kib = snapshot
            .host()
            .guest_free_kib
            .saturating_sub(self.settings.host_reserve_mib * MIB);
        let grants_kib: u64 = changes
            .iter()
            .map(|c| c.target_kib.saturating_sub(c.actual_kib))
            .sum();
        if grants_kib > headroom_kib {
            let ratio = headroom_kib as f64 / grants_kib as f64;
            for change in changes.iter_mut().filter(|c| c.target_kib > c.actual_kib) {
                let grant = change.target_kib - change.actual_kib;
                let trimmed = (grant as f64 * ratio).floor() as u64;
                out.rejected.push(Rejection {
                    reason: Refusal::HostReserve,
                    vm: change.vm.clone(),
                    action: format!("grant {} MiB to {}", grant / MIB, change.vm),
                    why: format!(
                        "host reserve: trimmed to {} MiB ({} MiB grantable above the {} MiB reserve, {} MiB asked in all)",
                        trimmed / MIB,
                        headroom_kib / MIB,
                        self.settings.host_reserve_mib,
                        grants_kib / MIB
                    ),
                });
                change.target_kib = change.actual_kib + trimmed;
            }
            changes.retain(|c| c.target_kib != c.actual_kib);
        }
        out.balloons = changes;
    }
}

/// The VM a CPU action names, if it exists and its CPU is vcoord's to manage.
fn cpu_managed_vm<'a>(snapshot: &'a Snapshot, name: &str) -> Result<&'a VmView, (Refusal, String)> {
    let vm = snapshot
        .vm(name)
        .ok_or((Refusal::UnknownVm, "no such domain".to_string()))?;
    if !vm.control.cpu_managed {
        return Err((
            Refusal::OperatorIgnore,
            "the operator set this VM's CPU to ignore".into(),
        ));
    }
    Ok(vm)
}

/// Checks CPU tunes: of known, managed domains, once each; weights, quotas and periods within
/// the scheduler's bounds; emulator sets of existing pCPUs; a quota never holding a VM below its
/// operator's CPU minimum, and lowered to its operator's maximum.
fn check_tunes(
    snapshot: &Snapshot,
    dedication: &Dedication,
    plan: &CpuPlan,
    out: &mut GuardedPlan,
) {
    let mut seen = HashSet::new();
    for wish in &plan.tunes {
        let action = format!("tune {}: {}", wish.vm, describe_tune(&wish.tune));
        let reject = |reason: Refusal, why: String| Rejection {
            action: action.clone(),
            why,
            reason,
            vm: wish.vm.clone(),
        };
        let vm = match cpu_managed_vm(snapshot, &wish.vm) {
            Ok(vm) => vm,
            Err((reason, why)) => {
                out.rejected.push(reject(reason, why));
                continue;
            }
        };
        if !seen.insert(wish.vm.as_str()) {
            out.rejected.push(reject(
                Refusal::Duplicate,
                "domain tuned twice in one plan".into(),
            ));
            continue;
        }
        let mut tune = wish.tune.clone();
        if let Some(shares) = tune.cpu_shares.filter(|s| !SHARES.contains(s)) {
            out.rejected.push(reject(
                Refusal::BadWeight,
                format!(
                    "cpu_shares {shares} is outside [{}, {}]",
                    SHARES.start(),
                    SHARES.end()
                ),
            ));
            continue;
        }
        if let Some(period) = tune.vcpu_period_us.filter(|p| !PERIOD_US.contains(p)) {
            out.rejected.push(reject(
                Refusal::BadQuota,
                format!(
                    "vcpu_period {period} µs is outside [{}, {}]",
                    PERIOD_US.start(),
                    PERIOD_US.end()
                ),
            ));
            continue;
        }
        if let Some(quota) = tune
            .vcpu_quota_us
            .filter(|q| *q != -1 && !QUOTA_US.contains(q))
        {
            out.rejected.push(reject(
                Refusal::BadQuota,
                format!(
                    "vcpu_quota {quota} µs is neither -1 (no limit) nor within [{}, {}]",
                    QUOTA_US.start(),
                    QUOTA_US.end()
                ),
            ));
            continue;
        }
        if let Some(bad) = tune.emulator.as_ref().and_then(|set| match set.is_empty() {
            true => Some("an empty pCPU set".to_string()),
            false => set
                .iter()
                .find(|&c| snapshot.pcpu_index(c).is_none())
                .map(|c| format!("pCPU {c}, which does not exist on this host")),
        }) {
            out.rejected.push(reject(
                Refusal::BadPin,
                format!("emulator threads pinned to {bad}"),
            ));
            continue;
        }
        if let Some(c) = tune
            .emulator
            .as_ref()
            .and_then(|set| set.iter().find(|&c| dedication.is_reserved(c)))
        {
            out.rejected.push(reject(
                Refusal::Dedicated,
                format!("emulator threads pinned to pCPU {c}, which is dedicated to a VM's vCPU"),
            ));
            continue;
        }
        // The cap the domain would have: the wish laid over what it has now.
        let vcpus = vm.vcpus.len();
        let after = vm.cputune.with(&tune);
        let cap = after.cap_pct(vcpus);
        if let (Some(cap), Some(min)) = (cap, vm.control.cpu_min_pct) {
            if cap < min {
                out.rejected.push(reject(
                    Refusal::BelowMinimum,
                    format!(
                        "a cap of {cap:.0}% of a pCPU is below the operator's minimum of {min:.0}%"
                    ),
                ));
                continue;
            }
        }
        if let Some(max) = vm.control.cpu_max_pct.filter(|_| vcpus > 0) {
            if cap.is_none_or(|cap| cap > max)
                && (tune.vcpu_quota_us.is_some() || tune.vcpu_period_us.is_some())
            {
                let period = after.vcpu_period_us.unwrap_or(DEFAULT_PERIOD_US);
                let quota = (max / 100.0 / vcpus as f64 * period as f64).floor() as i64;
                let quota = quota.clamp(*QUOTA_US.start(), *QUOTA_US.end());
                out.rejected.push(reject(
                    Refusal::Trimmed,
                    format!("vcpu_quota lowered to {quota} µs: the operator's maximum is {max:.0}% of a pCPU"),
                ));
                tune.vcpu_quota_us = Some(quota);
            }
        }
        out.tunes.push(VmTune {
            vm: wish.vm.clone(),
            tune,
        });
    }
}

/// `cpu_shares 2048, vcpu_quota 50000 µs, emulator {1}`.
pub fn describe_tune(tune: &CpuTune) -> String {
    let mut parts = Vec::new();
    if let Some(s) = tune.cpu_shares {
        parts.push(format!("cpu_shares {s}"));
    }
    if let Some(q) = tune.vcpu_quota_us {
        parts.push(format!("vcpu_quota {q} µs"));
    }
    if let Some(p) = tune.vcpu_period_us {
        parts.push(format!("vcpu_period {p} µs"));
    }
    if let Some(e) = &tune.emulator {
        parts.push(format!("emulator {{{e}}}"));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpuset::CpuSet;
    use crate::model::Pcpu;
    use crate::policy::BalloonTarget;
    use crate::runtime::snapshot::{HostView, MemoryView, VcpuView, VmView};
    use vcoord_api::snapshot::Placement;
    use vcoord_api::VmControl;

    fn vm(name: &str, actual_mib: u64, unused_mib: Option<u64>) -> VmView {
        VmView {
            cputune: Default::default(),
            name: name.into(),
            uuid: name.into(),
            vcpus: vec![VcpuView {
                id: 0,
                load_pct: Some(50.0),
                wait_pct: None,
                pcpu: Some(0),
                affinity: CpuSet::single(0),
            }],
            memory: MemoryView {
                max_kib: 2048 * MIB,
                actual_kib: actual_mib * MIB,
                unused_kib: unused_mib.map(|u| u * MIB),
                available_kib: None,
                unavailable_kib: None,
                usable_kib: None,
                swap_in_kib: None,
                swap_out_kib: None,
                major_faults: None,
                major_fault_rate: None,
                swap_rate_kib_s: None,
                stats_fresh: unused_mib.is_some(),
                last_report_s: None,
                ..MemoryView::default()
            },
            oom_events: None,
            control: VmControl::default(),
        }
    }

    fn snapshot(guest_free_mib: u64, vms: Vec<VmView>) -> Snapshot {
        let host = HostView::new(
            (0..2).map(Pcpu::plain).collect(),
            8192 * MIB,
            guest_free_mib * MIB,
        );
        Snapshot::builder(host)
            .tick(1)
            .interval_s(1.0)
            .vms(vms)
            .build()
            .unwrap()
    }

    fn targets(list: &[(&str, i64)]) -> MemoryPlan {
        MemoryPlan {
            targets: list
                .iter()
                .map(|&(vm, mib)| BalloonTarget {
                    vm: vm.into(),
                    target_kib: mib * MIB as i64,
                    reason: String::new(),
                })
                .collect(),
            ..MemoryPlan::default()
        }
    }

    /// On two pCPUs a dedicated VM has pCPU 1: a plan (a plugin's, say) that puts another VM's
    /// vCPU or emulator threads there, or the dedicated VM's vCPU elsewhere, is refused and
    /// counted; the same plan on pCPU 0 passes.
    #[test]
    fn nothing_else_is_put_on_a_dedicated_pcpu() {
        let mut lat = vm("lat", 512, Some(100));
        lat.control.placement = Some(Placement::Dedicated);
        let snap = snapshot(4096, vec![lat, vm("web", 512, Some(100))]);
        let emulator = |set: &[u32]| CpuTune {
            emulator: Some(set.iter().copied().collect()),
            ..CpuTune::default()
        };
        let mut plan = CpuPlan::keep("test");
        plan.pin("web", 0, &[1]);
        plan.pin("lat", 0, &[0]);
        plan.tune("web", emulator(&[0, 1]));
        let out = Guard::default().check(&snap, &plan, &MemoryPlan::default());
        assert!(out.pins.is_empty() && out.tunes.is_empty(), "{out:?}");
        let refused: Vec<(Refusal, &str)> = out
            .rejected
            .iter()
            .map(|r| (r.reason, r.why.as_str()))
            .collect();
        assert_eq!(refused.len(), 3, "{refused:?}");
        assert!(
            refused.iter().all(|r| r.0 == Refusal::Dedicated),
            "{refused:?}"
        );
        assert!(
            refused[0].1.contains("pCPU 1 is dedicated to lat"),
            "{refused:?}"
        );
        assert!(refused[1].1.contains("pCPU 1's alone"), "{refused:?}");
        let mut plan = CpuPlan::keep("test");
        plan.pin("web", 0, &[0]);
        plan.pin("lat", 0, &[1]);
        plan.tune("web", emulator(&[0]));
        let out = Guard::default().check(&snap, &plan, &MemoryPlan::default());
        assert!(out.rejected.is_empty(), "{out:?}");
        assert_eq!((out.pins.len(), out.tunes.len()), (2, 1));
    }

    #[test]
    fn tunes_within_bounds_minimum_and_maximum_pass_and_the_rest_is_refused_with_a_reason() {
        let mut floor = vm("floor", 512, Some(100));
        floor.control.cpu_min_pct = Some(50.0);
        let mut capped = vm("capped", 512, Some(100));
        capped.control.cpu_max_pct = Some(40.0);
        let mut pinned = vm("pinned", 512, Some(100));
        pinned.control.placement = Some(Placement::Pin);
        let mut ignored = vm("ignored", 512, Some(100));
        ignored.control.cpu_managed = false;
        let snap = snapshot(
            4096,
            vec![vm("a", 512, Some(100)), floor, capped, pinned, ignored],
        );
        let tune = |shares: Option<u64>, quota: Option<i64>, emulator: Option<&[u32]>| CpuTune {
            cpu_shares: shares,
            vcpu_quota_us: quota,
            vcpu_period_us: None,
            emulator: emulator.map(|e| e.iter().copied().collect()),
        };
        let mut plan = CpuPlan::keep("test");
        plan.tune("a", tune(Some(2048), Some(50_000), Some(&[1])));
        plan.tune("a", tune(Some(512), None, None));
        plan.tune("nobody", tune(Some(512), None, None));
        plan.tune("ignored", tune(Some(512), None, None));
        plan.tune("floor", tune(None, Some(60_000), None));
        plan.tune("capped", tune(None, Some(-1), None));
        plan.pin("pinned", 0, &[0, 1]);
        plan.pin("pinned", 0, &[1]);
        let out = Guard::default().check(&snap, &plan, &MemoryPlan::default());
        use Refusal::*;
        let reasons: Vec<_> = out.rejected.iter().map(|r| r.reason).collect();
        assert_eq!(
            reasons,
            vec![
                OperatorPlacement,
                Duplicate,
                UnknownVm,
                OperatorIgnore,
                Trimmed
            ]
        );
        // Each refusal of `floor` alone, as a plan of its own would meet it.
        for (wish, reason, why) in [
            (
                tune(Some(1), None, None),
                BadWeight,
                "cpu_shares 1 is outside [2, 262144]",
            ),
            (
                tune(None, Some(10), None),
                BadQuota,
                "vcpu_quota 10 µs is neither -1",
            ),
            (
                tune(None, Some(40_000), None),
                BelowMinimum,
                "a cap of 40% of a pCPU is below the operator's minimum of 50%",
            ),
            (
                tune(None, None, Some(&[5])),
                BadPin,
                "pCPU 5, which does not exist",
            ),
        ] {
            let mut one = CpuPlan::keep("test");
            one.tune("floor", wish);
            let out = Guard::default().check(&snap, &one, &MemoryPlan::default());
            assert!(out.tunes.is_empty(), "{:?}", out.tunes);
            assert_eq!(out.rejected[0].reason, reason);
            assert!(out.rejected[0].why.contains(why), "{}", out.rejected[0].why);
        }
        let names: Vec<_> = out.tunes.iter().map(|t| t.vm.as_str()).collect();
        assert_eq!(names, vec!["a", "floor", "capped"]);
        assert_eq!(out.tunes[1].tune.vcpu_quota_us, Some(60_000));
        // No limit above an operator's maximum of 40% on one vCPU: 40 ms in each 100 ms.
        assert_eq!(out.tunes[2].tune.vcpu_quota_us, Some(40_000));
        assert_eq!(out.pins.len(), 1);
    }

    #[test]
    fn pins_only_to_existing_pcpus_and_vcpus() {
        let snap = snapshot(4096, vec![vm("a", 512, Some(100))]);
        let pin = |vm: &str, vcpu, cpus: &[u32]| VcpuPin {
            vm: vm.into(),
            vcpu,
            cpus: cpus.iter().copied().collect(),
        };
        let plan = CpuPlan {
            tunes: Vec::new(),
            pins: vec![
                pin("a", 0, &[1]),
                pin("a", 0, &[0]),
                pin("a", 3, &[0]),
                pin("b", 0, &[0]),
                pin("a", 0, &[7]),
                pin("a", 0, &[]),
            ],
            reason: String::new(),
        };
        let out = Guard::default().check(&snap, &plan, &MemoryPlan::default());
        assert_eq!(out.pins, vec![pin("a", 0, &[1])]);
        let reasons: Vec<_> = out.rejected.iter().map(|r| r.reason).collect();
        use Refusal::*;
        assert_eq!(reasons, vec![Duplicate, BadPin, UnknownVm, BadPin, BadPin]);
        let whys: Vec<_> = out.rejected.iter().map(|r| r.why.as_str()).collect();
        assert_eq!(whys[3], "pCPU 7 does not exist on this host");
    }

    /// KSM changes pass only where the plans may drive it, at most once in the interval,
    /// trimmed into range; what the host already has is nothing to do.
    #[test]
    fn ksm_changes_pass_within_bounds_once_in_their_interval_where_vcoord_drives_ksm() {
        use vcoord_api::KsmView;
        let at = |t: f64, ksm: Option<KsmView>| {
            let s = snapshot(8192, vec![vm("a", 512, Some(400))]);
            let mut host = s.host().clone();
            host.ksm = ksm;
            s.to_builder()
                .host(host)
                .tick(t as u64)
                .interval_s(1.0)
                .wall_s(t)
                .build()
                .unwrap()
        };
        let off = KsmView {
            pages_to_scan: 100,
            sleep_ms: 20,
            managed: true,
            ..KsmView::default()
        };
        let plan = |run, pages, sleep_ms| MemoryPlan {
            ksm: Some(KsmPlan {
                run,
                pages_to_scan: pages,
                sleep_ms,
            }),
            ..MemoryPlan::default()
        };
        let mut guard = Guard::default();
        let cpu = CpuPlan::default();
        let reasons = |out: &GuardedPlan| out.rejected.iter().map(|r| r.reason).collect::<Vec<_>>();
        // What the host has already: nothing to do, nothing refused.
        let out = guard.check(&at(0.0, Some(off.clone())), &cpu, &plan(false, 100, 20));
        assert_eq!((out.ksm, reasons(&out)), (None, vec![]));
        // Out of range: trimmed, and let through.
        let out = guard.check(&at(1.0, Some(off.clone())), &cpu, &plan(true, 5000, 1));
        let trimmed = KsmPlan {
            run: true,
            pages_to_scan: 1250,
            sleep_ms: 10,
        };
        assert_eq!(
            (out.ksm, reasons(&out)),
            (Some(trimmed), vec![Refusal::Trimmed])
        );
        // Another change 5 s later: too soon; 10 s later: through.
        let out = guard.check(&at(6.0, Some(off.clone())), &cpu, &plan(true, 400, 10));
        assert_eq!((out.ksm, reasons(&out)), (None, vec![Refusal::TooSoon]));
        let out = guard.check(&at(11.0, Some(off.clone())), &cpu, &plan(true, 400, 10));
        assert_eq!(out.ksm.map(|k| k.pages_to_scan), Some(400));
        assert!(out.rejected.is_empty());
        // The operator runs KSM, or it is not read: refused, whatever the plan.
        let left = KsmView {
            managed: false,
            ..off.clone()
        };
        for ksm in [Some(left), None] {
            let out = Guard::default().check(&at(30.0, ksm), &cpu, &plan(true, 400, 10));
            assert_eq!((out.ksm, reasons(&out)), (None, vec![Refusal::KsmLeft]));
        }
    }

    #[test]
    fn balloon_clamps_to_floor_margin_and_max() {
        // a: uses 512-400 = 112 MiB: floor 200 wins over used+64 = 176
        // b: uses 900-100 = 800 MiB: used+64 = 864 wins
        // c: asks above max 2048
        let snap = snapshot(
            8192,
            vec![
                vm("a", 512, Some(400)),
                vm("b", 900, Some(100)),
                vm("c", 1024, Some(50)),
            ],
        );
        let out = Guard::default().check(
            &snap,
            &CpuPlan::default(),
            &targets(&[("a", 100), ("b", 300), ("c", 4096)]),
        );
        let got: Vec<_> = out
            .balloons
            .iter()
            .map(|b| (b.vm.as_str(), b.target_kib / MIB))
            .collect();
        assert_eq!(got, vec![("a", 200), ("b", 864), ("c", 2048)]);
        assert_eq!(out.rejected.len(), 3);
    }

    #[test]
    fn virtio_mem_targets_stay_within_the_devices() {
        // 1024 MiB booted + a 1 GiB device (max 2048) with 256 MiB plugged.
        let with_device = |name: &str, held: bool| {
            let mut v = vm(name, 1280, Some(600));
            v.memory.virtio_mem = vec![vcoord_api::VirtioMemView {
                alias: "virtiomem0".into(),
                size_kib: 1024 * MIB,
                block_kib: 2 * MIB,
                requested_kib: 256 * MIB,
                current_kib: 256 * MIB,
                node: Some(0),
                held,
            }];
            v
        };
        let snap = snapshot(
            8192,
            vec![
                with_device("a", false),
                with_device("b", false),
                with_device("c", true),
            ],
        );
        let out = Guard::default().check(
            &snap,
            &CpuPlan::default(),
            &targets(&[("a", 2000), ("b", 2100), ("c", 1500)]),
        );
        let got: Vec<_> = out
            .balloons
            .iter()
            .map(|b| (b.vm.as_str(), b.target_kib / MIB))
            .collect();
        // Beyond the device: refused, nothing carried out; a held device: only what it has.
        assert_eq!(got, vec![("a", 2000)]);
        let reasons: Vec<_> = out
            .rejected
            .iter()
            .map(|r| (r.vm.as_str(), r.reason))
            .collect();
        assert_eq!(
            reasons,
            vec![("b", Refusal::BeyondDevice), ("c", Refusal::Trimmed)]
        );
        assert_eq!(
            out.rejected[0].why,
            "more than the domain can have: 1024 MiB booted + 1024 MiB of virtio-mem"
        );
        assert!(
            out.rejected[1].why.contains("max 1280 MiB"),
            "{}",
            out.rejected[1].why
        );
    }

    #[test]
    fn operator_settings_hold_whatever_the_plan() {
        let mut cpu_off = vm("cpu-off", 1024, Some(500));
        cpu_off.control.cpu_managed = false;
        let mut mem_off = vm("mem-off", 1024, Some(500));
        mem_off.control.memory_managed = false;
        let mut bounded = vm("bounded", 1024, Some(700));
        bounded.control.min_kib = Some(900 * MIB);
        bounded.control.max_kib = Some(1100 * MIB);
        let mut above = vm("above", 1024, Some(100));
        above.control.max_kib = Some(800 * MIB);
        let snap = snapshot(8192, vec![cpu_off, mem_off, bounded, above]);
        let pins = CpuPlan {
            tunes: Vec::new(),
            pins: vec![VcpuPin {
                vm: "cpu-off".into(),
                vcpu: 0,
                cpus: CpuSet::single(1),
            }],
            reason: String::new(),
        };
        let out = Guard::default().check(
            &snap,
            &pins,
            &targets(&[
                ("cpu-off", 600),
                ("mem-off", 600),
                ("bounded", 300),
                ("above", 2000),
            ]),
        );
        assert!(out.pins.is_empty());
        let got: Vec<_> = out
            .balloons
            .iter()
            .map(|b| (b.vm.as_str(), b.target_kib / MIB))
            .collect();
        // cpu-off's memory is managed; bounded stops at its min; above (already over its max)
        // is not grown.
        assert_eq!(got, vec![("cpu-off", 600), ("bounded", 900)]);
        let refused: Vec<_> = out
            .rejected
            .iter()
            .map(|r| (r.vm.as_str(), r.reason))
            .collect();
        assert!(
            refused.contains(&("cpu-off", Refusal::OperatorIgnore)),
            "{refused:?}"
        );
        assert!(
            refused.contains(&("mem-off", Refusal::OperatorIgnore)),
            "{refused:?}"
        );
        assert!(
            refused.contains(&("bounded", Refusal::Trimmed)),
            "{refused:?}"
        );
        let whys: Vec<_> = out.rejected.iter().map(|r| r.why.as_str()).collect();
        assert!(
            whys.iter().any(|w| w.contains("operator's min 900 MiB")),
            "{whys:?}"
        );
        // A grant stops at the operator's max.
        let mut capped = vm("capped", 600, Some(10));
        capped.control.max_kib = Some(700 * MIB);
        let snap = snapshot(8192, vec![capped]);
        let out = Guard::default().check(&snap, &CpuPlan::default(), &targets(&[("capped", 1000)]));
        assert_eq!(out.balloons[0].target_kib, 700 * MIB);
    }

    #[test]
    fn shrink_below_floor_never_becomes_grow() {
        let snap = snapshot(8192, vec![vm("a", 150, Some(60))]);
        let out = Guard::default().check(&snap, &CpuPlan::default(), &targets(&[("a", 120)]));
        assert!(out.balloons.is_empty());
    }

    #[test]
    fn grants_are_scaled_to_the_reserve() {
        // 500 MiB free, 200 reserve: 300 grantable, 600 asked -> each grant halved.
        let snap = snapshot(500, vec![vm("a", 512, Some(50)), vm("b", 512, Some(50))]);
        let out = Guard::default().check(
            &snap,
            &CpuPlan::default(),
            &targets(&[("a", 912), ("b", 712)]),
        );
        let got: Vec<_> = out
            .balloons
            .iter()
            .map(|b| (b.vm.as_str(), b.target_kib / MIB))
            .collect();
        assert_eq!(got, vec![("a", 712), ("b", 612)]);
    }

    #[test]
    fn no_grants_when_host_is_at_reserve() {
        let snap = snapshot(150, vec![vm("a", 512, Some(50))]);
        let out = Guard::default().check(&snap, &CpuPlan::default(), &targets(&[("a", 700)]));
        assert!(out.balloons.is_empty());
        assert_eq!(out.rejected[0].reason, Refusal::HostReserve);
        assert!(out.rejected[0].why.starts_with("host reserve"));
    }

    #[test]
    fn stale_stats_and_negative_targets_are_refused() {
        let snap = snapshot(4096, vec![vm("a", 512, None), vm("b", 512, Some(300))]);
        let out = Guard::default().check(
            &snap,
            &CpuPlan::default(),
            &targets(&[("a", 400), ("b", -5)]),
        );
        assert!(out.balloons.is_empty());
        let reasons: Vec<_> = out.rejected.iter().map(|r| r.reason).collect();
        assert_eq!(reasons, vec![Refusal::StaleStats, Refusal::BadTarget]);
    }
}
