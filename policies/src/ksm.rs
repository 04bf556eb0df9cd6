//! The KSM part of `pressure-balloon`: the kernel's same-page merging runs only while the host
//! is short of memory, scans as fast as merging pays within a CPU budget, and stops once the host
//! has been comfortable for a while. That is how oVirt MOM and ksmtuned run it, for two reasons:
//! ksmd costs CPU, and merged pages are a side channel between guests (docs/ksm.md).
//!
//! One law, each tick, from the host level the balloon law works out ([`Level`]) and KSM's own
//! figures in the snapshot:
//!
//! - **Off** (ksmd not merging) and the host short (any level but comfortable): start at
//!   [`START_PAGES`] a wakeup, sleeping 10 ms x 16 GiB / host memory between wakeups (MOM's
//!   rule; at least the guard's 10 ms).
//! - **Merging**, every [`STEP_S`]: while merging pays (the memory it saves rose by
//!   [`PAYS_KIB`] or more over the step) [`STEP_UP_PAGES`] more a wakeup, else
//!   [`STEP_DOWN_PAGES`] fewer (MOM's +300 / -50); never more than keeps ksmd within
//!   [`BUDGET_PCT`] of one pCPU (its CPU taken to follow its pages: over it, as much less as
//!   brings it back), nor more at all while its CPU is not measured; always within the guard's
//!   range.
//! - **Cooling**: the host comfortable again; merging goes on as it was. Comfortable for
//!   `ksm_cool_s`, ksmd stops (`run` = 0: what it merged stays merged until the guests write
//!   to it); short again, it is merging again.
//!
//! ksmd found merging when the law starts (someone else started it) is taken as the law's own:
//! cooling on a comfortable host, merging on a short one; one found stopped on a comfortable
//! host (its start held back by the guard, or stopped by someone) is off. A host whose operator runs KSM
//! (`[host] ksm = "leave"`) or where KSM is not read is left alone.
//!
//! Known limitations: the law sees one figure for the whole host (what merging saves), not
//! which guests share pages, so it cannot tell a scan that finds nothing new from one that has
//! not reached the shareable pages yet; a large host's first full scan can take longer than a
//! step, and the scan slows down until it pays again. The CPU budget is ksmd's own time as the
//! kernel counts it, not what it costs the guests (cache, memory bandwidth). It never unmerges
//! (`run` = 2): on a host that was short, that would take back the memory at once.

use vcoord_api::plan::{KsmPlan, KSM_PAGES_TO_SCAN, KSM_SLEEP_MS};
use vcoord_api::units::KIB_PER_MIB_F64 as MIB;
use vcoord_api::{KsmView, Snapshot};

use crate::pressure_balloon::Level;

/// Pages a wakeup ksmd starts at (the kernel's own default).
pub const START_PAGES: u64 = 100;
/// Pages a wakeup added each step while merging pays (MOM's step up).
pub const STEP_UP_PAGES: u64 = 300;
/// Pages a wakeup taken off each step once merging stops paying (MOM's step down).
pub const STEP_DOWN_PAGES: u64 = 50;
/// Time between changes of the scan rate, s (MOM's policy period; the guard's interval).
pub const STEP_S: f64 = 10.0;
/// ksmd's CPU budget, percent of one pCPU.
pub const BUDGET_PCT: f64 = 10.0;
/// Merging pays while what it saves rises by this much over a step, KiB.
pub const PAYS_KIB: f64 = 4.0 * MIB;
/// Host memory for which MOM's rule sleeps 10 ms between wakeups, KiB (16 GiB).
const SLEEP_REFERENCE_KIB: f64 = 16.0 * 1024.0 * MIB;

/// Where the law stands.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum KsmState {
    /// ksmd is not merging.
    #[default]
    Off,
    /// Merging on a short host: the settings asked for, and when the step began with what
    /// merging saved then.
    Merging {
        /// Settings asked for.
        asked: KsmPlan,
        /// When this step began, s.
        step_at_s: f64,
        /// What merging saved then, KiB.
        saved_kib: u64,
    },
    /// Merging on a host comfortable since `since_s`.
    Cooling {
        /// Settings asked for.
        asked: KsmPlan,
        /// Comfortable since, s.
        since_s: f64,
    },
}

/// The law's state for one host.
#[derive(Clone, Debug, Default)]
pub struct Ksm {
    state: KsmState,
}

impl Ksm {
    /// This tick's KSM settings for `level` (`None`: leave KSM as it is), and a few words on
    /// why.
    pub fn step(
        &mut self,
        snapshot: &Snapshot,
        level: Level,
        cool_s: f64,
    ) -> Option<(KsmPlan, String)> {
        let host = snapshot.host();
        let Some(view) = host.ksm.as_ref().filter(|k| k.managed) else {
            self.state = KsmState::Off;
            return None;
        };
        let now = snapshot.wall_s();
        let short = level != Level::Comfortable;
        // ksmd as found: the law's own from here (see the module documentation); and on a
        // comfortable host a ksmd not running (its start held back, or stopped by someone) is
        // nothing to cool down.
        if self.state == KsmState::Off && view.running {
            self.state = KsmState::Cooling {
                asked: view.settings(),
                since_s: now,
            };
        } else if !short && !view.running {
            self.state = KsmState::Off;
        }
        let (plan, why) = match (self.state, short) {
            (KsmState::Off, false) => return None,
            (KsmState::Off, true) => {
                let asked = KsmPlan {
                    run: true,
                    pages_to_scan: START_PAGES,
                    sleep_ms: sleep_ms(host.mem_total_kib),
                };
                self.state = KsmState::Merging {
                    asked,
                    step_at_s: now,
                    saved_kib: view.saved_kib,
                };
                (asked, "started: the host is short".to_string())
            }
            (
                KsmState::Merging {
                    asked,
                    step_at_s,
                    saved_kib,
                },
                true,
            ) => {
                if now - step_at_s < STEP_S {
                    (asked, "merging".to_string())
                } else {
                    let gain = view.saved_kib as f64 - saved_kib as f64;
                    let (pages, why) = next_pages(asked.pages_to_scan, view, gain);
                    let asked = KsmPlan {
                        pages_to_scan: pages,
                        ..asked
                    };
                    self.state = KsmState::Merging {
                        asked,
                        step_at_s: now,
                        saved_kib: view.saved_kib,
                    };
                    (asked, why)
                }
            }
            (KsmState::Merging { asked, .. }, false) => {
                self.state = KsmState::Cooling {
                    asked,
                    since_s: now,
                };
                (asked, "the host is comfortable again".to_string())
            }
            (KsmState::Cooling { asked, .. }, true) => {
                self.state = KsmState::Merging {
                    asked,
                    step_at_s: now,
                    saved_kib: view.saved_kib,
                };
                (asked, "short again".to_string())
            }
            (KsmState::Cooling { asked, since_s }, false) => {
                if now - since_s < cool_s {
                    (
                        asked,
                        format!("comfortable for {:.0} s of {cool_s:.0}", now - since_s),
                    )
                } else {
                    self.state = KsmState::Off;
                    let stop = KsmPlan {
                        run: false,
                        ..asked
                    };
                    (stop, format!("stopped: comfortable for {cool_s:.0} s"))
                }
            }
        };
        let figures = format!(
            "{:.0} MiB saved, ksmd {}",
            view.saved_kib as f64 / MIB,
            view.ksmd_cpu_pct
                .map_or("CPU not measured".into(), |c| format!("{c:.1}% CPU"))
        );
        let reason = if plan.run {
            format!(
                "KSM {why}: {} pages every {} ms ({figures})",
                plan.pages_to_scan, plan.sleep_ms
            )
        } else {
            format!("KSM {why} ({figures})")
        };
        Some((plan, reason))
    }
}

/// MOM's sleep between wakeups for a host of `mem_total_kib`, within the guard's range.
fn sleep_ms(mem_total_kib: u64) -> u64 {
    let ms = 10.0 * SLEEP_REFERENCE_KIB / (mem_total_kib as f64).max(1.0);
    (ms.round() as u64).clamp(*KSM_SLEEP_MS.start(), *KSM_SLEEP_MS.end())
}

/// The next step's pages a wakeup, from `pages` now, ksmd's CPU and what merging saved over the
/// step (`gain_kib`): MOM's step up while merging pays, its step down when it does not, never
/// more than ksmd's budget allows (its CPU taken to follow its pages), nor more at all where its
/// CPU is not measured.
fn next_pages(pages: u64, view: &KsmView, gain_kib: f64) -> (u64, String) {
    let (lo, hi) = (*KSM_PAGES_TO_SCAN.start(), *KSM_PAGES_TO_SCAN.end());
    let (want, why) = if gain_kib >= PAYS_KIB {
        (
            pages + STEP_UP_PAGES,
            format!("merging pays ({:.0} MiB a step)", gain_kib / MIB),
        )
    } else {
        (
            pages.saturating_sub(STEP_DOWN_PAGES),
            "merging no longer pays".to_string(),
        )
    };
    let budget = match view.ksmd_cpu_pct {
        Some(cpu) if cpu > 0.0 => (pages as f64 * BUDGET_PCT / cpu).floor() as u64,
        Some(_) => u64::MAX,
        None => pages,
    };
    if budget < want {
        (
            budget.clamp(lo, hi),
            format!("{why}, ksmd at its {BUDGET_PCT:.0}% budget"),
        )
    } else {
        (want.clamp(lo, hi), why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{mem_vm, snapshot};

    /// A snapshot at `t` s of a 16 GiB host whose KSM stands as `ksm` says.
    fn host(t: f64, ksm: Option<KsmView>) -> Snapshot {
        let s = snapshot(2, vec![mem_vm("a", 1024, 1024, Some(512))], 8 * 1024);
        let mut h = s.host().clone();
        h.ksm = ksm;
        s.to_builder()
            .host(h)
            .tick(t as u64)
            .interval_s(1.0)
            .wall_s(t)
            .build()
            .unwrap()
    }

    fn view(running: bool, saved_mib: u64, cpu: f64, pages: u64) -> KsmView {
        KsmView {
            running,
            saved_kib: saved_mib * 1024,
            pages_to_scan: pages,
            sleep_ms: 10,
            ksmd_cpu_pct: Some(cpu),
            managed: true,
            ..KsmView::default()
        }
    }

    #[test]
    fn merging_starts_when_short_speeds_up_while_it_pays_and_stops_after_the_cool_time() {
        let mut k = Ksm::default();
        // Comfortable and off: nothing.
        assert_eq!(
            k.step(
                &host(0.0, Some(view(false, 0, 0.0, 100))),
                Level::Comfortable,
                60.0
            ),
            None
        );
        // Short: started at the kernel's default rate, 10 ms apart on a 16 GiB host.
        let (plan, why) = k
            .step(
                &host(1.0, Some(view(false, 0, 0.0, 100))),
                Level::Pressure,
                60.0,
            )
            .unwrap();
        assert_eq!(
            (plan.run, plan.pages_to_scan, plan.sleep_ms),
            (true, START_PAGES, 10),
            "{why}"
        );
        // Within a step: the same settings.
        let (same, _) = k
            .step(
                &host(5.0, Some(view(true, 40, 2.0, 100))),
                Level::Pressure,
                60.0,
            )
            .unwrap();
        assert_eq!(same, plan);
        // A step later, 100 MiB more saved at 2% CPU: faster.
        let (faster, why) = k
            .step(
                &host(11.0, Some(view(true, 100, 2.0, 100))),
                Level::Pressure,
                60.0,
            )
            .unwrap();
        assert_eq!(faster.pages_to_scan, START_PAGES + STEP_UP_PAGES, "{why}");
        // Over budget: scaled back to it, though merging pays.
        let (slower, why) = k
            .step(
                &host(21.0, Some(view(true, 300, 20.0, 400))),
                Level::Critical,
                60.0,
            )
            .unwrap();
        assert_eq!(slower.pages_to_scan, 200, "{why}");
        // At its budget: held there while merging pays.
        let (held, why) = k
            .step(
                &host(31.0, Some(view(true, 400, 10.0, 200))),
                Level::Pressure,
                60.0,
            )
            .unwrap();
        assert_eq!(held.pages_to_scan, 200, "{why}");
        // Nothing more saved: a little slower.
        let (slower, why) = k
            .step(
                &host(41.0, Some(view(true, 400, 5.0, 200))),
                Level::Pressure,
                60.0,
            )
            .unwrap();
        assert_eq!(slower.pages_to_scan, 150, "{why}");
        // Comfortable: merging goes on for the cool time, then ksmd stops.
        let running = |t| host(t, Some(view(true, 300, 1.0, 150)));
        let (keep, _) = k.step(&running(50.0), Level::Comfortable, 60.0).unwrap();
        assert!(keep.run);
        let (keep, why) = k.step(&running(109.0), Level::Comfortable, 60.0).unwrap();
        assert!(keep.run, "{why}");
        let (stop, why) = k.step(&running(110.0), Level::Comfortable, 60.0).unwrap();
        assert!(!stop.run, "{why}");
        assert!(why.contains("stopped"), "{why}");
        assert_eq!(k.state, KsmState::Off);
        // Once stopped and seen stopped, nothing more to ask.
        assert_eq!(
            k.step(
                &host(111.0, Some(view(false, 300, 0.0, 150))),
                Level::Comfortable,
                60.0
            ),
            None
        );
    }

    #[test]
    fn short_again_while_cooling_merges_again_and_a_ksmd_found_running_is_the_laws_own() {
        let mut k = Ksm::default();
        // Found merging on a comfortable host: cooling, then stopped.
        let found = |t| host(t, Some(view(true, 50, 1.0, 700)));
        let (keep, _) = k.step(&found(0.0), Level::Comfortable, 30.0).unwrap();
        assert_eq!((keep.run, keep.pages_to_scan), (true, 700));
        assert!(matches!(k.state, KsmState::Cooling { .. }));
        // Short again: merging, at the rate it had.
        let (again, _) = k.step(&found(10.0), Level::Pressure, 30.0).unwrap();
        assert_eq!((again.run, again.pages_to_scan), (true, 700));
        assert!(matches!(k.state, KsmState::Merging { .. }));
        // The cool time counts from the last time it was short.
        k.step(&found(20.0), Level::Comfortable, 30.0).unwrap();
        let (keep, _) = k.step(&found(45.0), Level::Comfortable, 30.0).unwrap();
        assert!(keep.run);
        let (stop, _) = k.step(&found(50.0), Level::Comfortable, 30.0).unwrap();
        assert!(!stop.run);
    }

    /// A start the guard held back (or a ksmd someone stopped) is not pursued once the host is
    /// comfortable: nothing is started on a comfortable host.
    #[test]
    fn a_start_that_did_not_happen_is_not_pursued_on_a_comfortable_host() {
        let mut k = Ksm::default();
        let stopped = |t| host(t, Some(view(false, 0, 0.0, 100)));
        let (start, _) = k.step(&stopped(0.0), Level::Pressure, 60.0).unwrap();
        assert!(start.run);
        assert_eq!(k.step(&stopped(5.0), Level::Comfortable, 60.0), None);
        assert_eq!(k.state, KsmState::Off);
        // Short again: started again.
        let (again, _) = k.step(&stopped(20.0), Level::Critical, 60.0).unwrap();
        assert!(again.run);
    }

    #[test]
    fn a_host_whose_operator_runs_ksm_or_without_it_is_left_alone() {
        let mut k = Ksm::default();
        let left = KsmView {
            managed: false,
            ..view(false, 0, 0.0, 100)
        };
        assert_eq!(k.step(&host(1.0, Some(left)), Level::Critical, 60.0), None);
        assert_eq!(k.step(&host(2.0, None), Level::Critical, 60.0), None);
    }

    #[test]
    fn the_sleep_follows_host_memory_within_the_guards_range() {
        assert_eq!(sleep_ms(8 * 1024 * 1024), 20);
        assert_eq!(sleep_ms(16 * 1024 * 1024), 10);
        assert_eq!(sleep_ms(256 * 1024 * 1024), 10);
    }
}
