//! `stable-balance`: balances vCPU demand over the pCPUs with the fewest moves, and moves only
//! when the move is worth more than the noise of what it is based on.
//!
//! One law, each tick:
//!
//! 1. Each vCPU's demand ([`vcoord_api::vcpu_demand_pct`]: run time plus run-queue wait, so two busy vCPUs
//!    on one pCPU show 200% there, not a saturated 100%) is tracked as an exponentially
//!    weighted mean and variance with one half-life (`half_life_s`). The variance is that
//!    vCPU's measured noise. A reading that moves the mean by x raises the noise to at least x,
//!    so one reading is never significant on its own; a step that stays is, as the noise
//!    decays behind it.
//! 2. The spread S is the stdev of the pCPUs' demand: their vCPUs' demand plus the demand of
//!    the load outside the VMs where the snapshot measures it (its run time `other_pct` plus
//!    its threads' run-queue wait `other_wait_pct`, as a vCPU's: what a host process wanted,
//!    not the share the vCPUs beside it left it; tracked by the same estimator and
//!    counted as far as it is significant: its mean less `confidence_sigmas` of its noise), so
//!    a pCPU 60% busy with host processes offers about 40%, while the few flickering points of
//!    the host's own threads move nothing. Up to `trigger_points` nothing moves; S counts over
//!    it as far as it is significant (less `confidence_sigmas` of its own noise, from every
//!    pCPU's: `spread_noise`), so a host balanced within the trigger is not moved by the
//!    moment its noise carries S over it.
//! 3. Over it, the search finds the placement with the fewest moves whose spread is below
//!    [`AIM_SHARE`] of the trigger: exact for small instances, else a local search that prefers
//!    idle SMT siblings and the NUMA node most of the VM's vCPUs are on.
//! 4. The placement is taken only if its gain G = S - S' pays for its moves, beats its noise
//!    and beats the predictor's own error E:
//!    `G - move_cost_points x moves > confidence_sigmas x sigma(G) + E`, where sigma(G) comes
//!    from every vCPU's noise (`gain_noise`). Equal vCPUs never trade places (no gain), and
//!    a placement that cannot be evened out is not churned by noise (no significant gain).
//! 5. Each move is judged by its outcome ([`vcoord_api::outcome`]): once settled, the spread
//!    now against the spread now without what the move did to the demand of what it touched
//!    (the wait the moved vCPUs, those beside them before and after, and the host's own work
//!    on those pCPUs took on or shed; each wait is tracked by the same estimator as the
//!    demand it is part of). E holds the largest recent miss, comes down as predictions hold
//!    and fades in minutes. Where predictions are biased, the bar rises by what they missed,
//!    and the churn stops after the first miss; what the guests and the host do meanwhile on
//!    their own (a boot ending, a host process starting) is not held against the move, so the
//!    law answers it as soon as it is significant. A vCPU that a candidate sends back, within
//!    [`RETURN_WINDOW_S`](vcoord_api::outcome::RETURN_WINDOW_S), to where the last move took
//!    it from is predicted at the demand it had there (the wait it shed by leaving included).
//!
//! After a move the policy settles for
//! [`SETTLE_HALF_LIVES`](vcoord_api::outcome::SETTLE_HALF_LIVES) half-lives: the moved vCPUs'
//! wait turns into run time, and a half-updated mean would undo the move. vCPUs
//! not pinned to one pCPU are pinned on first sight, spread by count until loads are known.
//! VMs that come and go are picked up and forgotten; on a restart, the placement found is
//! adopted like any other (every vCPU starts at [`PRIOR_NOISE_PCT`] of noise, so only a clear
//! imbalance moves anything before the noise is measured), and the prediction error E of the
//! process before is taken back ([`CpuPolicy::learned`]: a restarted daemon does not try again
//! the move its predecessor had learned to leave alone).
//!
//! Known limitations:
//! - Demand is taken to move with a vCPU unchanged. Run-queue wait does not: a vCPU beside a
//!   host process with long bursts waits behind them, and whichever vCPU is put there inherits
//!   that wait. The law does not model it; it learns the miss (step 5), so such a host is
//!   left a little less balanced than it could be, and re-tried each time E has faded (every
//!   few minutes at most one move).
//! - What a move did is told from what its guests did by the wait: a vCPU taken off a crowded
//!   pCPU that runs there what it waited for before is judged as if its demand had fallen by
//!   all of its wait (its run's rise taken as its guest's doing), so such a move's miss is
//!   under-counted; and a wait that rose on its own beside a moved vCPU (a neighbour turning
//!   busy) is taken as the move's.
//! - The law judges what touched pCPUs show; the vCPUs of VMs it leaves alone there count in
//!   their pCPU's load but not among what a move touched.
//! - The host's own wait is measured only where vcoord reads the host's threads (the local
//!   fast path): elsewhere a host process squeezed by vCPUs counts what it got, not what it
//!   wanted, and E learns that bias instead.
//! - E is one figure for the host: a bias seen in one corner raises the bar everywhere.
//! - The search minimises the stdev of demand, not the wait it causes: two placements of equal
//!   spread are equal to it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use vcoord_api::dedicated::{dedicate, Dedication};
use vcoord_api::outcome::{Demand, Judge, Move, Outcomes};
use vcoord_api::placement::{fewest_moves_over, loads_of_over, local_search_over, Search};
use vcoord_api::stats::{stdev, Estimate};
use vcoord_api::{
    CpuPlan, CpuPolicy, CpuSet, CpuTune, ParamError, Placement, Policy, Snapshot, VcpuPin,
};

vcoord_api::params! {
    /// Parameters of `stable-balance`.
    pub struct StableBalanceParams {
        /// the spread (stdev of pCPU demand) tolerated: up to it nothing moves
        pub trigger_points: f64 = 5.0, unit "percent points", range 0.0..=100.0;
        /// half-life of each vCPU's demand and noise estimates, whatever the tick
        pub half_life_s: f64 = 1.0, unit "seconds", range 0.1..=600.0;
        /// a placement's gain must beat this many standard deviations of its noise (3: 99.9%, one-sided)
        pub confidence_sigmas: f64 = 3.0, unit "standard deviations", range 0.0..=10.0;
        /// ... and pay this much spread for each vCPU it moves
        pub move_cost_points: f64 = 1.0, unit "percent points per vCPU moved", range 0.0..=100.0;
    }
}

/// The search aims below this share of the trigger, so that noise does not carry the new
/// placement straight back over it.
pub const AIM_SHARE: f64 = 0.5;

pub use vcoord_api::stats::PRIOR_NOISE_PCT;

/// Largest exact fewest-moves search, in placements visited; larger instances use the local
/// search.
pub const EXACT_LIMIT: u64 = 200_000;

/// The local search may move each vCPU this many times over ...
const LOCAL_STEPS_PER_VCPU: usize = 4;
/// ... plus this many steps, for tiny hosts.
const LOCAL_STEPS_MIN: usize = 8;

/// Tie-breaks of the local search among equally good moves (they do not trade spread): taking
/// a vCPU off its VM's NUMA node outweighs any SMT sibling's load, weighed per point.
const OFF_NODE_PENALTY: f64 = 1.0;
const SIBLING_LOAD_PENALTY: f64 = 0.001;

/// A vCPU (VM UUID, vCPU) moved from one pCPU index to another.
type Moves = Outcomes<Thing, usize>;

/// What a move's outcome is judged on: a vCPU (VM UUID, vCPU) or the host's own work on a pCPU
/// (by id).
#[derive(Clone, Debug, PartialEq)]
enum Thing {
    Vcpu(String, u32),
    Host(u32),
}

/// What the law concluded at a tick (the plan's reason is its text).
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// No managed vCPU, or no pCPU.
    NothingToPlace,
    /// After a move, for `left_s` more.
    Settling {
        /// Seconds left.
        left_s: f64,
    },
    /// The spread is within the trigger, as far as it is significant.
    Within {
        /// Demand stdev, points.
        spread: f64,
        /// Its standard deviation, points.
        noise: f64,
        /// The trigger.
        trigger: f64,
    },
    /// The best placement found does not pay for its moves beyond its noise.
    NotWorth(Judged),
    /// Moving to the placement found.
    Rebalance(Judged),
}

/// A placement weighed by the law.
#[derive(Clone, Debug, PartialEq)]
pub struct Judged {
    /// `exact` or `local`: which search found it.
    pub search: &'static str,
    /// Demand stdev now, points.
    pub spread: f64,
    /// ... and after the moves.
    pub predicted: f64,
    /// vCPUs moved.
    pub moves: usize,
    /// Standard deviation of the gain, points.
    pub noise: f64,
    /// The prediction error then, points.
    pub error: f64,
    /// What the gain had to beat: the moves' cost, `confidence_sigmas` x the noise and the
    /// prediction error.
    pub needed: f64,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::NothingToPlace => write!(f, "nothing to place"),
            Verdict::Settling { left_s } => {
                write!(f, "settling: vCPUs moved, judged again in {left_s:.1} s")
            }
            Verdict::Within {
                spread,
                noise,
                trigger,
            } => write!(
                f,
                "steady: demand stdev {spread:.1} (noise {noise:.1} per sigma), within {trigger:.1}"
            ),
            Verdict::NotWorth(j) => write!(
                f,
                "hold: demand stdev {:.1}, the best placement found reaches {:.1} after {} moves: a gain of {:.1}, not above {:.1} (the moves' cost, the noise at {:.1} per sigma, the predictions' error {:.1})",
                j.spread,
                j.predicted,
                j.moves,
                j.spread - j.predicted,
                j.needed,
                j.noise,
                j.error
            ),
            Verdict::Rebalance(j) => write!(
                f,
                "rebalance ({}): demand stdev {:.1}, predicted {:.1} after {} moves (a gain of {:.1} > {:.1})",
                j.search,
                j.spread,
                j.predicted,
                j.moves,
                j.spread - j.predicted,
                j.needed
            ),
        }
    }
}

/// The policy with its parameters and the demand estimates.
#[derive(Clone, Debug, Default)]
pub struct StableBalance {
    /// Its parameters.
    pub params: StableBalanceParams,
    /// Demand of each vCPU, by (VM UUID, vCPU).
    demand: HashMap<(String, u32), Estimate>,
    /// The run-queue wait in it: the part of its demand that is where it runs, not what it
    /// does (a move's outcome is judged by it).
    wait: HashMap<(String, u32), Estimate>,
    /// Non-VM load of each pCPU, by id, where the snapshot measures it, and the run-queue wait
    /// in it.
    other: HashMap<u32, Estimate>,
    other_wait: HashMap<u32, Estimate>,
    /// Its moves, and what their outcomes taught it.
    outcomes: Moves,
}

impl Policy for StableBalance {
    const NAME: &'static str = "stable-balance";
    const DESCRIPTION: &'static str = "balances vCPU demand (load + run-queue wait) with the fewest moves, only when the gain beats the measured noise";
    type Params = StableBalanceParams;

    fn new(params: StableBalanceParams) -> Result<Self, ParamError> {
        Ok(Self {
            params,
            demand: HashMap::new(),
            wait: HashMap::new(),
            other: HashMap::new(),
            other_wait: HashMap::new(),
            outcomes: Moves::default(),
        })
    }
}

/// One vCPU as this policy sees it.
struct Item {
    vm: usize,
    vcpu: u32,
    /// pCPU index it is on (pinned to, or last ran on), if known.
    home: Option<usize>,
    /// Pinned to exactly `home` already.
    pinned: bool,
    /// pCPU index it is pinned to alone, if it is.
    pinned_at: Option<usize>,
    /// Demand estimate, percent of one pCPU, and its noise (the standard deviation of the
    /// estimate).
    demand: f64,
    noise: f64,
    /// The run-queue wait estimate in `demand`.
    wait: f64,
}

impl Item {
    /// Its demand estimate with the wait in it.
    fn measured(&self) -> Demand {
        Demand {
            total: self.demand,
            wait: self.wait,
        }
    }
}

/// What stays put on each pCPU index: the vCPUs of VMs the operator left alone and the load
/// outside the VMs, which takes capacity that is not there for the vCPUs.
struct Base {
    load: Vec<f64>,
    /// Sum of their noise variances.
    noise_var: Vec<f64>,
    /// The pCPU id at each index, and the load outside the VMs there where it is measured (its
    /// demand estimate and the wait in it).
    ids: Vec<u32>,
    host: Vec<Option<Demand>>,
}

/// The vCPUs where they are now, as a move's outcome is judged on them.
struct Placed<'a> {
    snapshot: &'a Snapshot,
    items: &'a [Item],
    /// (pCPU index, demand) of each item.
    demands: &'a [(usize, f64)],
    current: &'a [usize],
    base: &'a Base,
}

impl Placed<'_> {
    fn is(&self, thing: &Thing, it: &Item) -> bool {
        matches!(thing, Thing::Vcpu(uuid, vcpu)
            if it.vcpu == *vcpu && self.snapshot.vms()[it.vm].uuid == *uuid)
    }

    fn host_at(&self, thing: &Thing) -> Option<usize> {
        let Thing::Host(id) = thing else {
            return None;
        };
        self.base.ids.iter().position(|i| i == id)
    }
}

impl Judge<Thing> for Placed<'_> {
    fn demand(&self, thing: &Thing) -> Option<Demand> {
        if let Some(at) = self.host_at(thing) {
            return self.base.host[at];
        }
        let it = self.items.iter().find(|it| self.is(thing, it))?;
        Some(it.measured())
    }

    fn spread_with(&self, held: &[(&Thing, f64)]) -> f64 {
        let demands: Vec<(usize, f64)> = self
            .demands
            .iter()
            .zip(self.items)
            .map(|(&(at, now), it)| {
                let given = held.iter().find(|(thing, _)| self.is(thing, it));
                (at, given.map_or(now, |(_, d)| *d))
            })
            .collect();
        let mut base = self.base.load.clone();
        for (thing, given) in held {
            if let Some(at) = self.host_at(thing) {
                if let Some(now) = self.base.host[at] {
                    base[at] += given - now.total;
                }
            }
        }
        stdev(&loads_of_over(&demands, self.current, &base))
    }
}

impl StableBalance {
    /// Folds this tick's readings into the estimates; every vCPU of the snapshot, in order.
    fn measure(&mut self, snapshot: &Snapshot) -> Vec<Item> {
        let index: HashMap<u32, usize> = snapshot
            .host()
            .pcpus
            .iter()
            .enumerate()
            .map(|(i, p)| (p.pcpu.id, i))
            .collect();
        let half_life = self.params.half_life_s;
        let (now, interval) = (snapshot.wall_s(), snapshot.interval_s());
        let (mut seen, mut waits) = (HashMap::new(), HashMap::new());
        let mut items = Vec::new();
        for (vi, vm) in snapshot.vms().iter().enumerate() {
            for v in &vm.vcpus {
                let key = (vm.uuid.clone(), v.id);
                let before = self.demand.get(&key).copied();
                let estimate = Estimate::fold(before, v.demand_pct(), now, interval, half_life);
                let before = self.wait.get(&key).copied();
                let wait = Estimate::fold(before, v.wait_pct, now, interval, half_life);
                if let Some(e) = wait {
                    waits.insert(key.clone(), e);
                }
                if let Some(e) = estimate {
                    seen.insert(key, e);
                }
                let home = v.placed_on().and_then(|p| index.get(&p).copied());
                items.push(Item {
                    vm: vi,
                    vcpu: v.id,
                    home,
                    pinned: v.affinity.only().is_some() && home.is_some(),
                    pinned_at: v.affinity.only().and_then(|p| index.get(&p).copied()),
                    demand: estimate.map_or(0.0, |e| e.mean),
                    noise: estimate.map_or(PRIOR_NOISE_PCT, |e| e.noise()),
                    wait: wait.map_or(0.0, |e| e.mean),
                });
            }
        }
        // VMs that left (or restarted under a new UUID) are forgotten.
        self.demand = seen;
        self.wait = waits;
        items
    }

    /// Folds this tick's non-VM load of each pCPU into its estimate (the same estimator as a
    /// vCPU's demand), and the wait in it; for each pCPU in snapshot order, the estimate (zero
    /// where not measured) and, where measured, the two as a [`Demand`].
    fn measure_other(&mut self, snapshot: &Snapshot) -> Vec<(Estimate, Option<Demand>)> {
        let (now, interval) = (snapshot.wall_s(), snapshot.interval_s());
        let half_life = self.params.half_life_s;
        let (mut seen, mut waits) = (HashMap::new(), HashMap::new());
        let estimates = snapshot
            .host()
            .pcpus
            .iter()
            .map(|p| {
                let id = p.pcpu.id;
                let before = self.other.get(&id).copied();
                let estimate =
                    Estimate::fold(before, p.other_demand_pct(), now, interval, half_life);
                let before = self.other_wait.get(&id).copied();
                let wait = Estimate::fold(before, p.other_wait_pct, now, interval, half_life);
                if let Some(e) = wait {
                    waits.insert(id, e);
                }
                let Some(e) = estimate else {
                    return (Estimate::none(now), None);
                };
                seen.insert(id, e);
                let demand = Demand {
                    total: e.mean,
                    wait: wait.map_or(0.0, |w| w.mean),
                };
                (e, Some(demand))
            })
            .collect();
        self.other = seen;
        self.other_wait = waits;
        estimates
    }

    /// The law: the placement to aim for and why (`current` when nothing is worth doing).
    fn judge(
        &mut self,
        snapshot: &Snapshot,
        items: &[Item],
        current: &[usize],
        base: &Base,
        shared: &[usize],
    ) -> (Vec<usize>, Verdict) {
        let now = snapshot.wall_s();
        let demands: Vec<(usize, f64)> = current
            .iter()
            .zip(items)
            .map(|(&at, it)| (at, it.demand))
            .collect();
        let loads = loads_of_over(&demands, current, &base.load);
        let spread = stdev(&loads);
        let trigger = self.params.trigger_points;
        // Seen pinned where it was sent (or gone).
        let host = Placed {
            snapshot,
            items,
            demands: &demands,
            current,
            base,
        };
        let half_life = self.params.half_life_s;
        let landed = |thing: &Thing, to: &usize| {
            items
                .iter()
                .all(|it| it.pinned_at == Some(*to) || !host.is(thing, it))
        };
        if let Some(left_s) = self.outcomes.settling(now, half_life, landed, &host) {
            return (current.to_vec(), Verdict::Settling { left_s });
        }
        // The spread counts over the trigger as far as it is significant.
        let mut load_var = base.noise_var.clone();
        for (&at, it) in current.iter().zip(items) {
            load_var[at] += it.noise * it.noise;
        }
        let spread_sd = spread_noise(&loads, &load_var);
        if spread - self.params.confidence_sigmas * spread_sd <= trigger {
            let verdict = Verdict::Within {
                spread,
                noise: spread_sd,
                trigger,
            };
            return (current.to_vec(), verdict);
        }
        let aim = AIM_SHARE * trigger;
        let (candidate, search) = match fewest_moves_over(&demands, &base.load, aim, EXACT_LIMIT) {
            Search::Found { assignment, .. } => (assignment, "exact"),
            Search::Impossible | Search::TooLarge => {
                let penalty = topology_penalty(snapshot, shared, items, &demands, &loads);
                let steps = LOCAL_STEPS_PER_VCPU * items.len() + LOCAL_STEPS_MIN;
                let found = local_search_over(&demands, &base.load, aim, steps, &penalty);
                (found, "local")
            }
        };
        // A vCPU sent back where the last move took it from is predicted at the demand it had
        // there.
        let vcpu = |it: &Item| Thing::Vcpu(snapshot.vms()[it.vm].uuid.clone(), it.vcpu);
        let expected: Vec<(usize, f64)> = demands
            .iter()
            .zip(items)
            .zip(current.iter().zip(&candidate))
            .map(|((&(at, now_d), it), (from, to))| {
                let back = (from != to)
                    .then(|| self.outcomes.demand_back(now, &vcpu(it), to))
                    .flatten();
                (at, back.unwrap_or(now_d))
            })
            .collect();
        let after = loads_of_over(&expected, &candidate, &base.load);
        let predicted = stdev(&after);
        let moves = candidate
            .iter()
            .zip(current)
            .filter(|(a, b)| a != b)
            .count();
        let sds: Vec<f64> = items.iter().map(|it| it.noise).collect();
        let noise = gain_noise(&sds, current, &candidate, &loads, &after, &base.noise_var);
        let moved: Vec<(Thing, usize, usize)> = items
            .iter()
            .zip(current.iter().zip(&candidate))
            .filter(|(_, (a, b))| a != b)
            .map(|(it, (&from, &to))| (vcpu(it), from, to))
            .collect();
        let bar =
            self.params.move_cost_points * moves as f64 + self.params.confidence_sigmas * noise;
        let gain = spread - predicted;
        let error = self.outcomes.error_at(now);
        let needed = bar + error;
        let judged = Judged {
            search,
            spread,
            predicted,
            moves,
            noise,
            error,
            needed,
        };
        if moves > 0 && gain > needed {
            // What it touches: every vCPU on a pCPU it changes, before or after, and the host's
            // own work there.
            let mut changed: Vec<usize> = current
                .iter()
                .zip(&candidate)
                .filter(|(a, b)| a != b)
                .flat_map(|(&a, &b)| [a, b])
                .collect();
            changed.sort_unstable();
            changed.dedup();
            let vcpus = items
                .iter()
                .zip(current.iter().zip(&candidate))
                .filter(|(_, (a, b))| changed.contains(a) || changed.contains(b))
                .map(|(it, _)| (vcpu(it), it.measured()));
            let work = changed.iter().filter_map(|&p| {
                let id = base.ids[p];
                Some((Thing::Host(id), base.host[p]?))
            });
            let touched = vcpus.chain(work).collect();
            self.outcomes.made(Move {
                at_s: now,
                moved,
                touched,
            });
            (candidate, Verdict::Rebalance(judged))
        } else {
            (current.to_vec(), Verdict::NotWorth(judged))
        }
    }

    /// One tick: the pins to make and the verdict behind them.
    #[cfg(test)]
    fn step(&mut self, snapshot: &Snapshot) -> (Vec<VcpuPin>, Verdict) {
        self.step_with(snapshot, &dedicate(snapshot))
    }

    /// [`Self::step`] with the host's dedication worked out.
    fn step_with(
        &mut self,
        snapshot: &Snapshot,
        dedication: &Dedication,
    ) -> (Vec<VcpuPin>, Verdict) {
        let host = snapshot.host();
        // Dedicated VMs' vCPUs go to their own pCPUs; the law balances the rest over the
        // shared ones, by position among them.
        let shared: Vec<usize> = (0..host.pcpus.len())
            .filter(|&i| !dedication.is_reserved(host.pcpus[i].pcpu.id))
            .collect();
        let mut position = vec![None; host.pcpus.len()];
        for (k, &i) in shared.iter().enumerate() {
            position[i] = Some(k);
        }
        let m = shared.len();
        let all = self.measure(snapshot);
        // Load outside the VMs and the vCPUs of VMs the operator left alone stay where they
        // are, but their demand counts.
        // Non-VM load counts as far as it is significant: its lower bound at the law's
        // confidence, so the few flickering points of a host's own threads move nothing while
        // a busy host process counts nearly whole.
        let other = self.measure_other(snapshot);
        let sigmas = self.params.confidence_sigmas;
        let mut base = Base {
            load: shared
                .iter()
                .map(|&i| other[i].0.significant(sigmas))
                .collect(),
            noise_var: shared.iter().map(|&i| other[i].0.noise().powi(2)).collect(),
            ids: shared.iter().map(|&i| host.pcpus[i].pcpu.id).collect(),
            host: shared.iter().map(|&i| other[i].1).collect(),
        };
        let mut count = vec![0usize; m];
        let mut items = Vec::with_capacity(all.len());
        let mut pins = dedication.pins(snapshot);
        for mut it in all {
            let vm = &snapshot.vms()[it.vm];
            if dedication.of(&vm.name).is_some() {
                continue;
            }
            it.home = it.home.and_then(|h| position[h]);
            it.pinned_at = it.pinned_at.and_then(|h| position[h]);
            it.pinned &= it.home.is_some();
            if let Some(h) = it.home {
                count[h] += 1;
            }
            // VMs the operator left alone, or to the host scheduler on a group of pCPUs
            // (`placement = "group"`), are not pinned here.
            let control = &vm.control;
            if control.cpu_managed && control.placement != Some(Placement::Group) {
                items.push(it);
            } else if let Some(h) = it.home {
                base.load[h] += it.demand;
                base.noise_var[h] += it.noise * it.noise;
            }
        }
        if m == 0 || items.is_empty() {
            return (pins, Verdict::NothingToPlace);
        }
        // vCPUs with no place yet go where the fewest vCPUs are (first sight, before loads).
        let current: Vec<usize> = items
            .iter()
            .map(|it| {
                it.home.unwrap_or_else(|| {
                    let p = (0..m).min_by_key(|&p| (count[p], p)).unwrap_or(0);
                    count[p] += 1;
                    p
                })
            })
            .collect();
        let (target, verdict) = self.judge(snapshot, &items, &current, &base, &shared);
        pins.extend(
            items
                .iter()
                .zip(&target)
                .filter(|(it, &to)| !it.pinned || it.home != Some(to))
                .map(|(it, &to)| VcpuPin {
                    vm: snapshot.vms()[it.vm].name.clone(),
                    vcpu: it.vcpu,
                    cpus: CpuSet::single(host.pcpus[shared[to]].pcpu.id),
                }),
        );
        (pins, verdict)
    }
}

impl CpuPolicy for StableBalance {
    fn decide(&mut self, snapshot: &Snapshot) -> CpuPlan {
        let dedication = dedicate(snapshot);
        let (pins, verdict) = self.step_with(snapshot, &dedication);
        let mut plan = CpuPlan {
            tunes: Vec::new(),
            pins,
            reason: verdict.to_string(),
        };
        // Where pCPUs are dedicated: VMs on a group go to the shared pCPUs, and every managed
        // VM's emulator threads too.
        let keep_off = !dedication.reserved.is_empty();
        for vm in snapshot.vms().iter().filter(|vm| vm.control.cpu_managed) {
            if keep_off && vm.control.placement == Some(Placement::Group) {
                for v in &vm.vcpus {
                    if v.affinity.is_empty() || v.affinity.iter().any(|c| dedication.is_reserved(c))
                    {
                        plan.pin(&vm.name, v.id, dedication.shared.as_slice());
                    }
                }
            }
            // The weight and cap its operator set, where libvirt has other ones.
            let wanted = CpuTune {
                emulator: keep_off.then(|| dedication.shared.clone()),
                ..vm.operator_tune()
            };
            if let Some(change) = vm.cputune.changes_to(&wanted) {
                plan.tune(&vm.name, change);
            }
        }
        plan
    }

    fn learned(&self) -> Option<vcoord_api::params::Table> {
        self.outcomes.learned()
    }

    fn relearn(&mut self, learned: &vcoord_api::params::Table) -> Result<(), String> {
        self.outcomes.relearn(learned)
    }
}

/// Standard deviation of the spread `stdev(loads)` from the noise, squared, of each pCPU's load
/// `load_var[p]` (the delta method): with m pCPUs, mean mu and spread S, a point more on pCPU
/// p moves S by (L_p - mu) / (m S).
fn spread_noise(loads: &[f64], load_var: &[f64]) -> f64 {
    let (spread, m) = (stdev(loads), loads.len() as f64);
    if spread <= 0.0 {
        return 0.0;
    }
    let mu = loads.iter().sum::<f64>() / m;
    loads
        .iter()
        .zip(load_var)
        .map(|(l, var)| ((l - mu) / (m * spread)).powi(2) * var)
        .sum::<f64>()
        .sqrt()
}

/// Standard deviation of the gain `stdev(loads) - stdev(after)` from each vCPU's demand noise
/// `noise[i]` (the delta method). With m pCPUs, mean mu and variance V of the loads, a vCPU on
/// pCPU a moves V by 2 (L_a - mu) / m per point of its demand; placed on b after, V' by
/// 2 (L'_b - mu) / m. The fall of the variance, V - V', so varies by 2 (L_a - L'_b) / m per
/// point of it (mu is the same before and after), and the fall of the stdev is
/// (V - V') / (S + S'). `base_noise_var` is the noise, squared, of what stays on each pCPU.
fn gain_noise(
    noise: &[f64],
    current: &[usize],
    candidate: &[usize],
    loads: &[f64],
    after: &[f64],
    base_noise_var: &[f64],
) -> f64 {
    let m = loads.len() as f64;
    let sensitivity = |a: usize, b: usize| 2.0 * (loads[a] - after[b]) / m;
    let movable: f64 = noise
        .iter()
        .zip(current.iter().zip(candidate))
        .map(|(sd, (&a, &b))| (sensitivity(a, b) * sd).powi(2))
        .sum();
    let fixed: f64 = base_noise_var
        .iter()
        .enumerate()
        .map(|(p, var)| sensitivity(p, p).powi(2) * var)
        .sum();
    let spreads = stdev(loads) + stdev(after);
    if spreads > 0.0 {
        (movable + fixed).sqrt() / spreads
    } else {
        0.0
    }
}

/// Tie-break for the local search: moving item `i` to pCPU `to` costs a little when `to`'s SMT
/// siblings are busy, and more when it takes a vCPU off the NUMA node most of its VM's vCPUs
/// are on now. Both are worked out once, so that a call costs no more than an index.
fn topology_penalty(
    snapshot: &Snapshot,
    shared: &[usize],
    items: &[Item],
    demands: &[(usize, f64)],
    loads: &[f64],
) -> impl Fn(usize, usize) -> f64 {
    let host = snapshot.host();
    // By position among the shared pCPUs (`shared[p]` is the pCPU's index).
    let mut position = vec![None; host.pcpus.len()];
    for (k, &i) in shared.iter().enumerate() {
        position[i] = Some(k);
    }
    let sibling_load: Vec<f64> = shared
        .iter()
        .map(|&i| {
            host.siblings(i)
                .filter_map(|j| position[j].map(|k| loads[k]))
                .sum()
        })
        .collect();
    let node_of: Vec<Option<u32>> = shared.iter().map(|&i| host.pcpus[i].pcpu.node_id).collect();
    // Per VM, how many of its vCPUs each node holds; the node with the most (lowest id on a
    // tie) is the VM's.
    let mut counts: BTreeMap<usize, BTreeMap<u32, usize>> = BTreeMap::new();
    for (it, d) in items.iter().zip(demands) {
        if let Some(node) = node_of[d.0] {
            *counts.entry(it.vm).or_default().entry(node).or_default() += 1;
        }
    }
    let vm_node: BTreeMap<usize, u32> = counts
        .into_iter()
        .filter_map(|(vm, nodes)| {
            let best = nodes
                .into_iter()
                .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))?;
            Some((vm, best.0))
        })
        .collect();
    let item_node: Vec<Option<u32>> = items
        .iter()
        .map(|it| vm_node.get(&it.vm).copied())
        .collect();
    move |i: usize, to: usize| {
        let off_node = match (item_node[i], node_of[to]) {
            (Some(home), Some(n)) if n != home => OFF_NODE_PENALTY,
            _ => 0.0,
        };
        off_node + SIBLING_LOAD_PENALTY * sibling_load[to]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{cpu_snapshot, pins_of};
    use proptest::prelude::{prop_assert, Just, Strategy};

    #[test]
    fn operator_weights_and_caps_are_set_once_and_group_vms_are_left_to_the_scheduler() {
        let s = cpu_snapshot(2, &[(90.0, 0), (80.0, 0), (10.0, 1)]);
        let mut vms = s.vms().to_vec();
        vms[0].control.cpu_shares = Some(512);
        vms[0].control.cpu_max_pct = Some(50.0);
        vms[1].control.placement = Some(Placement::Group);
        let with = |vms: Vec<vcoord_api::VmView>| {
            Snapshot::builder(s.host().clone())
                .wall_s(1.0)
                .interval_s(1.0)
                .vms(vms)
                .build()
                .unwrap()
        };
        let mut p = StableBalance::default();
        let plan = p.decide(&with(vms.clone()));
        assert_eq!(plan.tunes.len(), 1);
        assert_eq!(plan.tunes[0].vm, "vm0");
        let t = &plan.tunes[0].tune;
        assert_eq!((t.cpu_shares, t.vcpu_quota_us), (Some(512), Some(50_000)));
        // vm1 is on a group: never pinned here, whatever its load.
        assert!(plan.pins.iter().all(|p| p.vm != "vm1"), "{:?}", plan.pins);
        // Once libvirt has them, nothing more.
        vms[0].cputune = vms[0].cputune.with(t);
        let plan = p.decide(&with(vms));
        assert!(plan.tunes.is_empty(), "{:?}", plan.tunes);
    }

    /// Deterministic noise: normal deviates of standard deviation `sd` (xorshift, Box-Muller).
    struct Noise(u64);

    impl Noise {
        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }

        fn normal(&mut self, sd: f64) -> f64 {
            let (u, v) = (self.uniform(), self.uniform());
            sd * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        }
    }

    /// Single-vCPU VMs on `pcpus` pCPUs, one tick a second, read with noise.
    struct Host {
        pcpus: u32,
        /// Where each vCPU is: where the policy last pinned it.
        on: Vec<u32>,
        noise: Noise,
        t: f64,
    }

    impl Host {
        fn new(pcpus: u32, on: &[u32], seed: u64) -> Self {
            Self {
                pcpus,
                on: on.to_vec(),
                noise: Noise(seed),
                t: 0.0,
            }
        }

        /// `ticks` of `p`, each reading `loads` plus noise of `sd` points (within 0..=100);
        /// the pins made and the verdict of each tick.
        fn run(
            &mut self,
            p: &mut StableBalance,
            loads: &[f64],
            sd: f64,
            ticks: usize,
        ) -> Vec<(usize, Verdict)> {
            (0..ticks)
                .map(|_| {
                    let vcpus: Vec<(f64, u32)> = loads
                        .iter()
                        .zip(&self.on)
                        .map(|(&l, &c)| ((l + self.noise.normal(sd)).clamp(0.0, 100.0), c))
                        .collect();
                    let s = crate::testutil::at(self.t, cpu_snapshot(self.pcpus, &vcpus));
                    self.t += 1.0;
                    let (pins, verdict) = p.step(&s);
                    for pin in &pins {
                        let i: usize = pin.vm[2..].parse().unwrap();
                        self.on[i] = pin.cpus.only().unwrap();
                    }
                    (pins.len(), verdict)
                })
                .collect()
        }
    }

    fn moves(verdicts: &[(usize, Verdict)]) -> usize {
        verdicts.iter().map(|v| v.0).sum()
    }

    #[test]
    fn balanced_host_is_left_alone_under_noise() {
        let mut p = StableBalance::default();
        for (t, noise) in [0.0, 4.0, -4.0, 5.0, -5.0, 3.0].iter().enumerate() {
            let s = cpu_snapshot(
                4,
                &[
                    (30.0 + noise, 0),
                    (30.0 - noise, 0),
                    (30.0, 1),
                    (30.0 + noise, 1),
                    (30.0 - noise, 2),
                    (30.0, 2),
                    (30.0 + noise, 3),
                    (30.0, 3),
                ],
            );
            let plan = p.decide(&s);
            assert!(plan.pins.is_empty(), "tick {t}: {}", plan.reason);
        }
    }

    /// The delta method against the thing itself: the gain's spread over many noisy draws of
    /// the demands.
    #[test]
    fn the_gain_noise_is_the_spread_of_the_gain_over_noisy_demands() {
        // Five vCPUs on three pCPUs; the candidate moves two of them.
        let demand = [60.0, 35.0, 30.0, 20.0, 45.0];
        let sd = [4.0, 6.0, 2.0, 8.0, 3.0];
        let current = [0, 0, 1, 1, 2];
        let candidate = [0, 2, 1, 1, 1];
        let base = [10.0, 0.0, 5.0];
        let base_var = [9.0, 0.0, 1.0];
        let loads_for = |d: &[f64], at: &[usize]| {
            let items: Vec<(usize, f64)> = at.iter().copied().zip(d.iter().copied()).collect();
            loads_of_over(&items, at, &base)
        };
        let loads = loads_for(&demand, &current);
        let after = loads_for(&demand, &candidate);
        let predicted = gain_noise(&sd, &current, &candidate, &loads, &after, &base_var);

        let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
        let gains: Vec<f64> = (0..20_000)
            .map(|_| {
                let d: Vec<f64> = demand
                    .iter()
                    .zip(sd)
                    .map(|(m, s)| m + noise.normal(s))
                    .collect();
                let b: Vec<f64> = base_var
                    .iter()
                    .map(|v| noise.normal(f64::sqrt(*v)))
                    .collect();
                let shift = |mut l: Vec<f64>| {
                    l.iter_mut().zip(&b).for_each(|(x, e)| *x += e);
                    l
                };
                stdev(&shift(loads_for(&d, &current))) - stdev(&shift(loads_for(&d, &candidate)))
            })
            .collect();
        let measured = stdev(&gains);
        assert!(
            (measured / predicted - 1.0).abs() < 0.1,
            "delta method {predicted:.3}, measured {measured:.3}"
        );
    }

    const STEP_SD: f64 = 3.0;

    /// Noise that crosses the trigger for a moment moves nothing; a step that stays does, once
    /// its noise has died down behind it.
    #[test]
    fn noise_over_the_trigger_moves_nothing_and_a_step_that_stays_does() {
        let mut p = StableBalance::default();
        // Six vCPUs, three per pCPU: 80 / 80, each reading 6 points of noise (a pCPU's stdev
        // is ~10, the spread's ~7: over the trigger on about half the ticks).
        let mut host = Host::new(2, &[0, 0, 0, 1, 1, 1], 7);
        let loads = [30.0, 30.0, 20.0, 30.0, 30.0, 20.0];
        let quiet = host.run(&mut p, &loads, 6.0, 120);
        let over = quiet
            .iter()
            .filter(|v| match &v.1 {
                Verdict::Within { spread, .. } => *spread > 5.0,
                _ => true,
            })
            .count();
        assert!(
            over > 20,
            "the noise crossed the trigger on only {over} ticks"
        );
        assert_eq!(moves(&quiet), 0, "{quiet:?}");
        // The same readings under a law blind to noise move vCPUs back and forth.
        let mut blind = StableBalance::default();
        blind.params.confidence_sigmas = 0.0;
        let churn = Host::new(2, &[0, 0, 0, 1, 1, 1], 7).run(&mut blind, &loads, 6.0, 120);
        assert!(moves(&churn) > 4, "{churn:?}");
        // A step: one vCPU 20 -> 44 for good (104 / 80), noise as before.
        let loads = [30.0, 30.0, 44.0, 30.0, 30.0, 20.0];
        let step = host.run(&mut p, &loads, STEP_SD, 30);
        let first = step
            .iter()
            .position(|v| v.0 > 0)
            .expect("the step is acted on");
        assert!(first >= 1, "acted on the step's first reading");
        assert!(
            first <= 10,
            "acted on the step only after {first} s: {step:?}"
        );
        eprintln!("step acted on after {first} s: {}", step[first].1);
        assert!(matches!(step[first].1, Verdict::Rebalance(_)));
        assert_eq!(
            moves(&step[first + 1..]),
            0,
            "moved again after the step was balanced: {step:?}"
        );
    }

    /// A host within the trigger whose noise carries the spread over it now and then: a small
    /// vCPU's move would gain a little (40 / 45 + 3 is 4 points of spread, 1 with the 3 moved),
    /// but the spread was never significantly over the trigger, so nothing moves; a step that
    /// stays (the 20-point vCPU at 34) does move.
    #[test]
    fn a_spread_within_the_trigger_is_not_moved_when_noise_carries_it_over() {
        let mut p = StableBalance::default();
        let mut host = Host::new(2, &[0, 1, 1, 1], 11);
        let loads = [40.0, 25.0, 20.0, 3.0];
        let quiet = host.run(&mut p, &loads, 3.0, 300);
        let over = quiet
            .iter()
            .filter(|v| match &v.1 {
                Verdict::Within { spread, .. } => *spread > 5.0,
                Verdict::NotWorth(j) | Verdict::Rebalance(j) => j.spread > 5.0,
                _ => false,
            })
            .count();
        assert!(
            over > 30,
            "the noise crossed the trigger on only {over} ticks"
        );
        assert_eq!(moves(&quiet), 0, "{quiet:?}");
        let step = host.run(&mut p, &[40.0, 25.0, 34.0, 3.0], 3.0, 60);
        assert!(moves(&step) > 0, "{step:?}");
    }

    /// A host whose demand cannot be split evenly (seen on real guests in a CPU burst: 70, 27
    /// on one pCPU; 41, 21, 2 on the other): the best placement is taken once, and noise never
    /// makes another look worth the moves; when the burst ends, the host is balanced again.
    #[test]
    fn an_uneven_host_is_placed_once_and_not_churned_by_noise() {
        let mut p = StableBalance::default();
        let mut host = Host::new(2, &[1, 1, 0, 0, 0], 11);
        let loads = [70.0, 27.0, 41.0, 21.0, 2.0];
        let burst = host.run(&mut p, &loads, 3.0, 120);
        let moved: Vec<usize> = burst
            .iter()
            .enumerate()
            .filter(|(_, v)| v.0 > 0)
            .map(|(t, _)| t)
            .collect();
        assert!(moved.len() <= 1, "moved at ticks {moved:?}");
        assert!(
            matches!(burst.last().unwrap().1, Verdict::NotWorth(_)),
            "{:?}",
            burst.last()
        );
        // The burst ends (70 -> 10): balanced again, once.
        let loads = [10.0, 27.0, 41.0, 21.0, 2.0];
        let after = host.run(&mut p, &loads, 3.0, 30);
        let moved = after.iter().filter(|v| v.0 > 0).count();
        assert_eq!(moved, 1, "{after:?}");
        assert!(matches!(after.last().unwrap().1, Verdict::Within { .. }));
    }

    /// On a restart onto a placement just over the trigger, nothing moves until the noise is
    /// measured; if the imbalance is real, it is then balanced.
    #[test]
    fn at_a_start_a_small_imbalance_moves_only_once_measured() {
        let mut p = StableBalance::default();
        for (t, loads) in [
            [56.0, 50.0, 34.0, 26.0],
            [55.0, 51.0, 33.0, 27.0],
            [56.0, 50.0, 34.0, 26.0],
            [52.0, 50.0, 31.0, 28.0],
            [53.0, 50.0, 31.0, 28.0],
        ]
        .iter()
        .enumerate()
        {
            let plan = p.decide(&pair_at(t as f64, *loads));
            assert!(plan.pins.is_empty(), "tick {t}: {}", plan.reason);
        }
        // 90 / 76, always: balanced once its noise has decayed from the prior.
        let mut p = StableBalance::default();
        let acted = (0..15)
            .position(|t| {
                !p.decide(&pair_at(t as f64, [56.0, 50.0, 34.0, 26.0]))
                    .pins
                    .is_empty()
            })
            .expect("balanced in the end");
        assert!((2..=8).contains(&acted), "acted at tick {acted}");
    }

    /// Two pCPUs, four vCPUs (heavy and light on each), at wall-clock time `t`.
    fn pair_at(t: f64, loads: [f64; 4]) -> Snapshot {
        crate::testutil::at(
            t,
            cpu_snapshot(
                2,
                &[(loads[0], 0), (loads[1], 1), (loads[2], 0), (loads[3], 1)],
            ),
        )
    }

    #[test]
    fn after_a_move_the_law_waits_for_the_estimates_to_follow() {
        let at = |t: f64, second: u32| {
            crate::testutil::at(t, cpu_snapshot(2, &[(90.0, 0), (90.0, second)]))
        };
        let mut p = StableBalance::default();
        let (pins, verdict) = p.step(&at(0.0, 0));
        assert!(matches!(verdict, Verdict::Rebalance(_)), "{verdict}");
        assert_eq!(
            pins_of(&CpuPlan {
                tunes: Vec::new(),
                pins,
                reason: String::new()
            }),
            vec![1]
        );
        // The move is seen: wait two half-lives, then judge again.
        assert!(matches!(p.step(&at(1.0, 1)).1, Verdict::Settling { .. }));
        assert!(matches!(p.step(&at(2.0, 1)).1, Verdict::Within { .. }));
        // A move not seen (a dry run): nothing to wait for, the same plan again.
        let mut p = StableBalance::default();
        assert!(matches!(p.step(&at(0.0, 0)).1, Verdict::Rebalance(_)));
        assert!(matches!(p.step(&at(1.0, 0)).1, Verdict::Rebalance(_)));
    }

    /// Four single-vCPU guests on two pCPUs at wall-clock time `t`: `(load, wait, pcpu)` each.
    fn measured_at(t: f64, vcpus: [(f64, f64, u32); 4]) -> Snapshot {
        let base = cpu_snapshot(2, &vcpus.map(|(load, _, pcpu)| (load, pcpu)));
        let vms: Vec<_> = base
            .vms()
            .iter()
            .cloned()
            .zip(vcpus)
            .map(|(mut vm, (_, wait, _))| {
                vm.vcpus[0].wait_pct = Some(wait);
                vm
            })
            .collect();
        let s = Snapshot::builder(base.host().clone())
            .tick(base.tick())
            .interval_s(1.0)
            .vms(vms)
            .build()
            .unwrap();
        crate::testutil::at(t, s)
    }

    /// Recorded on real guests (two at 70%, two at 20%, all started on pCPU 0; 1 s ticks): the
    /// first tick splits them heavy + light on each pCPU. At tick 6 every guest read more
    /// run-queue wait for one second; the spread crossed the trigger by a little (5.8 > 5.5) and
    /// a light guest's smoothed demand moved 15 points, which once counted as a real change and
    /// traded the two heavy guests' places. A reading that does not stay is noise.
    #[test]
    fn one_noisy_second_does_not_trade_equal_placements() {
        // (load, wait, pCPU) of heavy1, heavy2, light1, light2, as recorded.
        let ticks = [
            [
                (46.7, 26.6, 0),
                (29.6, 45.0, 0),
                (8.1, 18.5, 0),
                (13.6, 10.2, 0),
            ],
            [
                (67.5, 5.4, 1),
                (59.6, 12.0, 0),
                (10.6, 13.1, 0),
                (21.1, 3.2, 1),
            ],
            [
                (65.3, 6.2, 1),
                (56.3, 14.3, 0),
                (13.3, 7.3, 0),
                (21.4, 1.7, 1),
            ],
            [
                (66.9, 3.8, 1),
                (59.3, 11.0, 0),
                (11.9, 8.9, 0),
                (21.0, 3.4, 1),
            ],
            [
                (56.1, 13.1, 1),
                (59.1, 11.8, 0),
                (13.1, 8.9, 0),
                (14.1, 8.8, 1),
            ],
            [
                (57.2, 29.4, 1),
                (51.9, 28.7, 0),
                (26.3, 8.7, 0),
                (27.0, 24.6, 1),
            ],
            // Ticks 7-12's readings, on the placement of tick 2.
            [
                (64.3, 6.1, 1),
                (62.6, 7.2, 0),
                (15.7, 6.8, 0),
                (17.1, 5.2, 1),
            ],
            [
                (57.0, 13.8, 1),
                (64.2, 5.2, 0),
                (16.1, 5.7, 0),
                (11.7, 13.5, 1),
            ],
            [
                (60.2, 18.2, 1),
                (55.5, 20.4, 0),
                (18.0, 9.8, 0),
                (30.1, 2.7, 1),
            ],
            [
                (66.5, 4.3, 1),
                (57.9, 12.4, 0),
                (10.4, 11.5, 0),
                (21.2, 2.4, 1),
            ],
            [
                (61.9, 10.1, 1),
                (57.2, 13.0, 0),
                (10.9, 10.3, 0),
                (16.6, 7.4, 1),
            ],
            [
                (51.7, 17.8, 1),
                (59.7, 13.4, 0),
                (14.5, 17.3, 0),
                (19.1, 7.4, 1),
            ],
        ];
        let mut p = StableBalance::default();
        let first = p.decide(&measured_at(1.0, ticks[0]));
        // heavy1 and light2 (or the other pair) move to pCPU 1.
        assert_eq!(first.pins.len(), 2, "{}", first.reason);
        for (i, tick) in ticks.iter().enumerate().skip(1) {
            let plan = p.decide(&measured_at(i as f64 + 1.0, *tick));
            assert!(plan.pins.is_empty(), "tick {}: {}", i + 1, plan.reason);
        }
    }

    /// Three light guests (20% each) beside a host process with long bursts on pCPU 0: whichever
    /// vCPU is there waits behind its bursts (20 points of wait, so it reads 40), so each swap
    /// predicts a balance that never comes (the vCPU sent there inherits the wait). The law
    /// that judges its moves by their outcomes stops after a miss or two; the same law with its
    /// error forgotten each tick (the law before outcomes counted) swaps all along.
    #[test]
    fn moves_whose_predictions_miss_raise_the_bar_until_the_churn_stops() {
        let run = |forget: bool| -> Vec<usize> {
            let mut p = StableBalance::default();
            let mut on = [0u32, 1, 1];
            let mut noise = Noise(3);
            let mut moved_at = Vec::new();
            for t in 0..120 {
                let base = cpu_snapshot(2, &on.map(|c| (20.0 + noise.normal(2.0), c)));
                let vms: Vec<_> = base
                    .vms()
                    .iter()
                    .cloned()
                    .map(|mut vm| {
                        let behind = vm.vcpus[0].pcpu == Some(0);
                        vm.vcpus[0].wait_pct = Some(if behind { 20.0 } else { 1.0 });
                        vm
                    })
                    .collect();
                let mut host = base.host().clone();
                host.pcpus[0].other_pct = Some(50.0 + noise.normal(2.0));
                host.pcpus[1].other_pct = Some(0.0);
                let s = Snapshot::builder(host)
                    .tick(t)
                    .interval_s(1.0)
                    .wall_s(t as f64)
                    .vms(vms)
                    .build()
                    .unwrap();
                if forget {
                    p.outcomes.forget();
                }
                let (pins, _) = p.step(&s);
                if !pins.is_empty() {
                    moved_at.push(t as usize);
                }
                for pin in pins {
                    let i: usize = pin.vm[2..].parse().unwrap();
                    on[i] = pin.cpus.only().unwrap();
                }
            }
            moved_at
        };
        let judged = run(false);
        let blind = run(true);
        assert!(blind.len() > 10, "the blind law moved at {blind:?}");
        assert!(judged.len() <= 2, "moved at {judged:?}");
        assert!(
            judged.iter().all(|&t| t < 20),
            "moved after settling: {judged:?}"
        );
    }

    /// What the real-guest day once caught: a guest booting (80% for 5 s) beside a 30% one on
    /// pCPU 1, a third 30% guest on pCPU 0. The law moves one vCPU; the boot then ends, and
    /// the spread comes back the other way. That is no miss of the move's (no moved vCPU took
    /// on any wait), so the law answers the new spread as soon as it is significant instead of
    /// holding the host uneven behind a learned error.
    #[test]
    fn a_boot_that_ends_after_a_move_is_no_miss_and_the_law_follows_the_new_spread() {
        let mut p = StableBalance::default();
        const BOOT: usize = 5;
        let mut on = [1u32, 1, 0];
        let mut noise = Noise(7);
        let mut moved_at = Vec::new();
        for t in 0..90 {
            let boot = if t < BOOT { 80.0 } else { 5.0 };
            let loads = [boot, 30.0, 30.0].map(|l| l + noise.normal(1.0));
            let s = crate::testutil::at(
                t as f64,
                cpu_snapshot(
                    2,
                    &[(loads[0], on[0]), (loads[1], on[1]), (loads[2], on[2])],
                ),
            );
            let (pins, verdict) = p.step(&s);
            if !pins.is_empty() {
                moved_at.push((t, verdict.to_string()));
            }
            for pin in pins {
                let i: usize = pin.vm[2..].parse().unwrap();
                on[i] = pin.cpus.only().unwrap();
            }
        }
        assert!(p.outcomes.error_at(90.0) < 2.0, "{moved_at:#?}");
        let after_boot: Vec<_> = moved_at.iter().filter(|(t, _)| *t >= BOOT).collect();
        assert_eq!(after_boot.len(), 1, "{moved_at:#?}");
        assert!(after_boot[0].0 < BOOT + 20, "{moved_at:#?}");
        // The two 30% guests apart, the idle one with either.
        assert_ne!(on[1], on[2], "{moved_at:#?}");
    }

    /// A dedicated VM gets the top pCPU to itself; the three busy shared VMs, whatever their
    /// loads, are balanced over what is left (here pCPU 0 alone), and every emulator thread
    /// goes there too.
    #[test]
    fn a_dedicated_vm_gets_its_own_pcpu_and_the_rest_share_the_others() {
        use crate::testutil::with_dedicated;
        let mut p = StableBalance::default();
        let mut on = [0u32, 1, 1, 0];
        for (t, loads) in [[20.0, 90.0, 90.0, 90.0], [20.0, 30.0, 95.0, 60.0]]
            .iter()
            .cycle()
            .take(6)
            .enumerate()
        {
            let s = with_dedicated(
                &crate::testutil::at(
                    t as f64,
                    cpu_snapshot(
                        2,
                        &[
                            (loads[0], on[0]),
                            (loads[1], on[1]),
                            (loads[2], on[2]),
                            (loads[3], on[3]),
                        ],
                    ),
                ),
                0,
            );
            let plan = p.decide(&s);
            for pin in &plan.pins {
                let i: usize = pin.vm[2..].parse().unwrap();
                on[i] = pin.cpus.only().unwrap();
            }
            assert_eq!(on, [1, 0, 0, 0], "tick {t}: {}", plan.reason);
            if t == 0 {
                let emulators: Vec<String> = plan
                    .tunes
                    .iter()
                    .map(|t| t.tune.emulator.clone().unwrap().to_string())
                    .collect();
                assert_eq!(emulators, ["0"; 4], "{plan:?}");
            } else {
                assert!(plan.pins.is_empty(), "tick {t}: {plan:?}");
            }
        }
    }

    #[test]
    fn all_on_one_spreads_with_the_fewest_moves() {
        let mut p = StableBalance::default();
        let s = cpu_snapshot(4, &[(95.0, 0); 8]);
        let plan = p.decide(&s);
        // Demand shows only as load here (no wait in the test snapshot): 8 x 95 on pCPU 0.
        assert_eq!(plan.pins.len(), 6, "{}", plan.reason);
        let mut per = [2usize, 0, 0, 0];
        for cpu in pins_of(&plan) {
            per[cpu as usize] += 1;
        }
        assert_eq!(per, [2, 2, 2, 2]);
    }

    #[test]
    fn equal_groups_never_trade_places() {
        let mut p = StableBalance::default();
        // Two heavy on one pCPU, two light on the other: one exchange (two moves) balances it.
        let s = cpu_snapshot(2, &[(60.0, 0), (60.0, 0), (20.0, 1), (20.0, 1)]);
        let plan = p.decide(&s);
        assert_eq!(plan.pins.len(), 2, "{}", plan.reason);
    }

    #[test]
    fn an_ignored_vm_stays_and_the_others_balance_around_it() {
        // Four 50% vCPUs on pCPU 0 of 2; vm0 is the operator's and must stay.
        let s = cpu_snapshot(2, &[(50.0, 0), (50.0, 0), (50.0, 0), (50.0, 0)]);
        let mut vms = s.vms().to_vec();
        vms[0].control.cpu_managed = false;
        let s = Snapshot::builder(s.host().clone())
            .tick(1)
            .interval_s(1.0)
            .vms(vms)
            .loads_from_vcpus()
            .build()
            .unwrap();
        let plan = StableBalance::default().decide(&s);
        assert!(plan.pins.iter().all(|p| p.vm != "vm0"), "{plan:?}");
        // vm0's 50 stays on pCPU 0: one more there, two on pCPU 1.
        let moved: Vec<u32> = pins_of(&plan);
        assert_eq!(moved.iter().filter(|&&c| c == 1).count(), 2, "{plan:?}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        #[test]
        fn plans_name_only_existing_pcpus_on_random_hosts(
            (m, vcpus) in (1u32..=12).prop_flat_map(|m| {
                let vcpu = (0u32..=100, 0..m).prop_map(|(load, pcpu)| (f64::from(load), pcpu));
                (Just(m), proptest::collection::vec(vcpu, 0..40))
            }),
        ) {
            let mut p = StableBalance::default();
            let s = cpu_snapshot(m, &vcpus);
            for pin in p.decide(&s).pins {
                let cpu = pin.cpus.only();
                prop_assert!(cpu.is_some_and(|c| c < m), "{:?} of {}", cpu, m);
                prop_assert!(s.vm(&pin.vm).is_some());
            }
        }
    }
}
