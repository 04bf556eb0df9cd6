//! `group-balance`: each VM on a group of pCPUs (its NUMA node, socket or core: `group_by`),
//! the host scheduler balancing inside the group; whole VMs move between groups only when the
//! groups' utilizations differ by more than their noise allows. Emulator threads stay off the
//! busiest group; each VM's CPU weight and cap come from the operator's settings.
//!
//! One law, each tick:
//!
//! 1. Each VM's demand (the sum of its vCPUs' run time and run-queue wait) and each pCPU's load
//!    outside the VMs (what the host's own threads wanted there: their run time and run-queue
//!    wait, as a VM's demand) are tracked with one estimator ([`Estimate`], one half-life).
//! 2. A group offers 100 points per pCPU less its significant non-VM load (the mean less
//!    `confidence_sigmas` of its noise); its utilization U is the demand of the VMs placed
//!    there (and of the vCPUs the operator left alone that run there) over what it offers. The
//!    spread S is the largest U less the smallest.
//! 3. A VM not inside one group (new, or placed by someone else) goes, heaviest first, to the
//!    group whose utilization after is lowest (ties: fewest vCPUs) among those with a pCPU for
//!    each of its vCPUs; a VM larger than every group runs on all pCPUs, its demand spread over
//!    the groups. A VM is only ever moved whole, and only where it fits.
//! 4. Over `trigger_points`, the one move of a VM out of the busiest group that lowers S most is
//!    made if its gain G pays `move_cost_points` and beats `confidence_sigmas` of its noise (the
//!    two groups' utilization noise) and the prediction error E. After a move the law waits
//!    until the VM is seen in its new group and
//!    [`SETTLE_HALF_LIVES`](vcoord_api::outcome::SETTLE_HALF_LIVES) half-lives have passed;
//!    then the spread now is set against the spread without what the move did to the demand
//!    of the VMs of the two groups (the wait each took on or shed; each VM's wait is tracked
//!    beside its demand), and E learns from the miss, as stable-balance's does
//!    ([`vcoord_api::outcome`]). A VM sent back within a minute to the group the last move
//!    took it from is predicted at the demand it had there.
//! 5. Every managed VM's vCPUs get its group's pCPUs (`placement = "pin"`: one pCPU each,
//!    spread inside the group); its emulator threads the pCPUs outside the busiest group (which
//!    changes only when another group is busier by `trigger_points`); its `cpu_shares` the
//!    operator's weight and its vCPU quota the operator's `cpu_max_pct`. Each only when it
//!    differs from what the VM has.

use std::collections::HashMap;
use std::fmt;

use vcoord_api::dedicated::{dedicate, Dedication};
use vcoord_api::outcome::{self, Outcomes};
use vcoord_api::params::{Field, ParamValue, Value};
use vcoord_api::stats::Estimate;
use vcoord_api::{
    CpuPlan, CpuPolicy, CpuSet, CpuTune, ParamError, Placement, Policy, Snapshot, VmView,
};

/// What makes a group of pCPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupBy {
    /// A NUMA node (the whole host where it has one node).
    Node,
    /// A socket.
    Socket,
    /// A core (its SMT siblings).
    Core,
}

impl ParamValue for GroupBy {
    const KIND: &'static str = "\"node\", \"socket\" or \"core\"";

    fn parse(value: &Value, field: Field<'_>) -> Result<Self, ParamError> {
        match value.as_str() {
            Some("node") => Ok(Self::Node),
            Some("socket") => Ok(Self::Socket),
            Some("core") => Ok(Self::Core),
            _ => Err(ParamError::new(
                field.key,
                format!("expected \"node\", \"socket\" or \"core\", found {value}"),
            )),
        }
    }

    fn show(&self) -> String {
        match self {
            Self::Node => "\"node\"",
            Self::Socket => "\"socket\"",
            Self::Core => "\"core\"",
        }
        .to_owned()
    }
}

vcoord_api::params! {
    /// Parameters of `group-balance`.
    pub struct GroupBalanceParams {
        /// what a group of pCPUs is: "node", "socket" or "core"
        pub group_by: GroupBy = GroupBy::Node, unit "", range 0..=0;
        /// the utilization spread between groups tolerated: up to it nothing moves
        pub trigger_points: f64 = 10.0, unit "percent points", range 0.0..=100.0;
        /// half-life of each VM's demand and noise estimates
        pub half_life_s: f64 = 2.0, unit "seconds", range 0.1..=600.0;
        /// a move's gain must beat this many standard deviations of its noise
        pub confidence_sigmas: f64 = 3.0, unit "standard deviations", range 0.0..=10.0;
        /// ... and pay this much spread for the VM it moves
        pub move_cost_points: f64 = 5.0, unit "percent points per VM moved", range 0.0..=100.0;
    }
}

/// What the law concluded at a tick (the plan's reason is its text).
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// No managed VM, or no pCPU.
    NothingToPlace,
    /// One group only: nothing to balance between.
    OneGroup,
    /// After a move, for `left_s` more.
    Settling {
        /// Seconds left.
        left_s: f64,
    },
    /// The spread is within the trigger.
    Within {
        /// Utilization spread, points.
        spread: f64,
    },
    /// Over the trigger, but no move of a whole VM lowers the spread.
    NoBetter {
        /// Utilization spread, points.
        spread: f64,
    },
    /// The best move does not pay beyond its noise.
    NotWorth(Move),
    /// Moving a VM.
    Moving(Move),
}

/// A move of one VM weighed by the law.
#[derive(Clone, Debug, PartialEq)]
pub struct Move {
    /// The VM.
    pub vm: String,
    /// From and to, as pCPU sets.
    pub from: CpuSet,
    /// ...
    pub to: CpuSet,
    /// Spread now and after, points.
    pub spread: f64,
    /// ...
    pub predicted: f64,
    /// The prediction error then, points.
    pub error: f64,
    /// What the gain had to beat: the move's cost, the noise and the prediction error.
    pub needed: f64,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::NothingToPlace => write!(f, "nothing to place"),
            Verdict::OneGroup => write!(f, "one group: the host scheduler balances"),
            Verdict::Settling { left_s } => {
                write!(f, "settling: a VM moved, judged again in {left_s:.1} s")
            }
            Verdict::Within { spread } => write!(f, "steady: group utilization spread {spread:.1}"),
            Verdict::NoBetter { spread } => write!(
                f,
                "hold: group utilization spread {spread:.1}, and no move of a whole VM lowers it"
            ),
            Verdict::NotWorth(m) => write!(
                f,
                "hold: spread {:.1}, moving {} from {{{}}} to {{{}}} reaches {:.1}: a gain not above {:.1}",
                m.spread, m.vm, m.from, m.to, m.predicted, m.needed
            ),
            Verdict::Moving(m) => write!(
                f,
                "move {} from {{{}}} to {{{}}}: spread {:.1} -> {:.1} (a gain above {:.1})",
                m.vm, m.from, m.to, m.spread, m.predicted, m.needed
            ),
        }
    }
}

/// The policy with its parameters and estimates.
#[derive(Clone, Debug, Default)]
pub struct GroupBalance {
    /// Its parameters.
    pub params: GroupBalanceParams,
    /// Demand of each VM, by UUID.
    demand: HashMap<String, Estimate>,
    /// The run-queue wait in it: the part of its demand that is where it runs (a move's
    /// outcome is judged by it).
    wait: HashMap<String, Estimate>,
    /// Non-VM load of each pCPU, by id.
    other: HashMap<u32, Estimate>,
    /// Its moves, and what their outcomes taught it.
    outcomes: Moves,
    /// The busiest group as last chosen (its first pCPU id): emulator threads stay off it.
    busiest: Option<u32>,
}

impl Policy for GroupBalance {
    const NAME: &'static str = "group-balance";
    const DESCRIPTION: &'static str = "each VM on a group of pCPUs (NUMA node, socket or core); whole VMs move only when groups are imbalanced beyond their noise; emulator threads off the busiest group; weights and caps from per-VM settings";
    type Params = GroupBalanceParams;

    fn new(params: GroupBalanceParams) -> Result<Self, ParamError> {
        Ok(Self {
            params,
            ..Self::default()
        })
    }
}

/// The groups of a host: pCPU indices, in topology order.
pub fn groups(snapshot: &Snapshot, by: GroupBy) -> Vec<Vec<usize>> {
    let host = snapshot.host();
    let mut out: Vec<(Option<u32>, Vec<usize>)> = Vec::new();
    let mut add = |key: Option<u32>, index: usize| match out.iter_mut().find(|(k, _)| *k == key) {
        Some((_, g)) => g.push(index),
        None => out.push((key, vec![index])),
    };
    match by {
        GroupBy::Node | GroupBy::Socket => {
            for (i, p) in host.pcpus.iter().enumerate() {
                let key = match by {
                    GroupBy::Node => p.pcpu.node_id,
                    _ => p.pcpu.socket_id,
                };
                add(key, i);
            }
        }
        GroupBy::Core => {
            for core in host.topology().iter().flat_map(|n| n.cores.iter()) {
                // pCPUs of unknown core are groups of one.
                if core.core_id.is_some() {
                    out.push((None, core.pcpus.clone()));
                } else {
                    out.extend(core.pcpus.iter().map(|&i| (None, vec![i])));
                }
            }
        }
    }
    out.into_iter().map(|(_, g)| g).collect()
}

/// One VM as the law sees it.
struct Member {
    vm: usize,
    demand: f64,
    /// The run-queue wait estimate in `demand`.
    wait: f64,
    noise_var: f64,
    /// The group all its vCPUs may run in, if one.
    group: Option<usize>,
}

impl Member {
    /// Its demand estimate with the wait in it.
    fn measured(&self) -> outcome::Demand {
        outcome::Demand {
            total: self.demand,
            wait: self.wait,
        }
    }
}

/// What the law measured at a tick: the host's groups, what each offers and carries, and the
/// VMs it places.
struct Measured {
    /// pCPU indices of each group, in topology order.
    groups: Vec<Vec<usize>>,
    /// The group of each pCPU index.
    group_of_pcpu: Vec<usize>,
    /// Each group as a pCPU set.
    sets: Vec<CpuSet>,
    /// Points each group offers: 100 per pCPU less its significant non-VM load (at least 1).
    offer: Vec<f64>,
    /// Demand placed on each group, points.
    load: Vec<f64>,
    /// Its noise, squared.
    noise_var: Vec<f64>,
    /// vCPUs placed on each group.
    vcpus: Vec<usize>,
    /// The managed VMs.
    members: Vec<Member>,
}

impl Measured {
    /// Each group's utilization with `load` on it, percent.
    fn utilization(&self, load: &[f64]) -> Vec<f64> {
        load.iter()
            .zip(&self.offer)
            .map(|(l, o)| 100.0 * l / o)
            .collect()
    }

    /// The largest utilization less the smallest.
    fn spread(u: &[f64]) -> f64 {
        let max = u.iter().copied().fold(f64::MIN, f64::max);
        let min = u.iter().copied().fold(f64::MAX, f64::min);
        max - min
    }

    /// Puts member `k` on group `g`.
    fn assign(&mut self, k: usize, g: usize, vcpus: usize) {
        let m = &mut self.members[k];
        self.load[g] += m.demand;
        self.noise_var[g] += m.noise_var;
        self.vcpus[g] += vcpus;
        m.group = Some(g);
    }
}

/// The VMs in their groups now, as a move's outcome is judged on them.
struct Grouped<'a> {
    snapshot: &'a Snapshot,
    m: &'a Measured,
}

impl Grouped<'_> {
    fn member(&self, uuid: &str) -> Option<&Member> {
        let vms = self.snapshot.vms();
        self.m
            .members
            .iter()
            .find(|member| vms[member.vm].uuid == uuid)
    }
}

impl outcome::Judge<String> for Grouped<'_> {
    fn demand(&self, uuid: &String) -> Option<outcome::Demand> {
        Some(self.member(uuid)?.measured())
    }

    fn spread_with(&self, held: &[(&String, f64)]) -> f64 {
        let mut load = self.m.load.clone();
        for (uuid, demand) in held {
            if let Some(member) = self.member(uuid) {
                if let Some(g) = member.group {
                    load[g] += demand - member.demand;
                }
            }
        }
        Measured::spread(&self.m.utilization(&load))
    }
}

/// A VM (by UUID) moved from one group to another.
type Moves = Outcomes<String, CpuSet>;

impl GroupBalance {
    /// Step 1: folds this tick's readings into the estimates (each pCPU's non-VM load, each
    /// VM's demand) and places what stays: VMs left alone where they run, managed VMs inside
    /// one group on it.
    fn measure(&mut self, snapshot: &Snapshot, dedication: &Dedication) -> Measured {
        let (now, interval) = (snapshot.wall_s(), snapshot.interval_s());
        let (half_life, sigmas) = (self.params.half_life_s, self.params.confidence_sigmas);
        let host = snapshot.host();
        // Groups of the shared pCPUs: dedicated ones are their VMs' alone.
        let groups: Vec<Vec<usize>> = groups(snapshot, self.params.group_by)
            .into_iter()
            .map(|g| {
                g.into_iter()
                    .filter(|&i| !dedication.is_reserved(host.pcpus[i].pcpu.id))
                    .collect::<Vec<_>>()
            })
            .filter(|g| !g.is_empty())
            .collect();
        let mut group_of_pcpu = vec![usize::MAX; host.pcpus.len()];
        for (gi, members) in groups.iter().enumerate() {
            for &i in members {
                group_of_pcpu[i] = gi;
            }
        }
        let sets: Vec<CpuSet> = groups
            .iter()
            .map(|g| g.iter().map(|&i| host.pcpus[i].pcpu.id).collect())
            .collect();
        let n = groups.len();
        let (mut offer, mut load, mut noise_var) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        // Non-VM load: an estimate starts at its first reading; unmeasured is none.
        let mut other = HashMap::new();
        for (i, p) in host.pcpus.iter().enumerate() {
            let before = self.other.get(&p.pcpu.id).copied();
            let e = Estimate::fold(before, p.other_demand_pct(), now, interval, half_life);
            if let Some(e) = e {
                other.insert(p.pcpu.id, e);
            }
            let Some(&g) = group_of_pcpu.get(i).filter(|&&g| g != usize::MAX) else {
                continue;
            };
            let e = e.unwrap_or(Estimate::none(now));
            offer[g] += 100.0 - e.significant(sigmas).min(100.0);
            noise_var[g] += e.noise().powi(2);
        }
        self.other = other;
        let (mut demand, mut waits) = (HashMap::new(), HashMap::new());
        let mut members = Vec::new();
        for (vi, vm) in snapshot.vms().iter().enumerate() {
            let reading = vm
                .vcpus
                .iter()
                .map(|v| v.demand_pct())
                .try_fold(0.0, |sum, d| d.map(|d| sum + d));
            let before = self.demand.get(&vm.uuid).copied();
            let e = Estimate::fold(before, reading, now, interval, half_life);
            if let Some(e) = e {
                demand.insert(vm.uuid.clone(), e);
            }
            let reading = vm
                .vcpus
                .iter()
                .try_fold(0.0, |sum, v| v.wait_pct.map(|w| sum + w));
            let before = self.wait.get(&vm.uuid).copied();
            let wait = Estimate::fold(before, reading, now, interval, half_life);
            if let Some(e) = wait {
                waits.insert(vm.uuid.clone(), e);
            }
            let (d, var) = e.map_or((0.0, 0.0), |e| (e.mean, e.noise().powi(2)));
            if !vm.control.cpu_managed {
                // Left alone: its vCPUs' demand counts where they run.
                for v in &vm.vcpus {
                    if let (Some(x), Some(i)) = (
                        v.demand_pct(),
                        v.placed_on().and_then(|p| snapshot.pcpu_index(p)),
                    ) {
                        if let Some(&g) = group_of_pcpu.get(i).filter(|&&g| g != usize::MAX) {
                            load[g] += x;
                        }
                    }
                }
                continue;
            }
            if vm.vcpus.is_empty() || dedication.of(&vm.name).is_some() {
                continue;
            }
            // Its group: the one holding every pCPU its vCPUs may run on, if that group has a
            // pCPU for each of its vCPUs (else it does not fit there).
            let all: CpuSet = vm.vcpus.iter().flat_map(|v| v.affinity.iter()).collect();
            let group = sets
                .iter()
                .position(|g| !all.is_empty() && all.iter().all(|c| g.contains(c)))
                .filter(|&g| groups[g].len() >= vm.vcpus.len());
            members.push(Member {
                vm: vi,
                demand: d,
                wait: wait.map_or(0.0, |e| e.mean),
                noise_var: var,
                group: None,
            });
            if let Some(g) = group {
                load[g] += d;
                noise_var[g] += var;
                members.last_mut().expect("just pushed").group = Some(g);
            }
        }
        self.demand = demand;
        self.wait = waits;
        let mut vcpus = vec![0usize; n];
        for m in &members {
            if let Some(g) = m.group {
                vcpus[g] += snapshot.vms()[m.vm].vcpus.len();
            }
        }
        Measured {
            offer: offer.iter().map(|o| o.max(1.0)).collect(),
            groups,
            group_of_pcpu,
            sets,
            load,
            noise_var,
            vcpus,
            members,
        }
    }

    /// Step 3: VMs outside any one group go, heaviest first, where utilization after is lowest
    /// (ties: fewest vCPUs); one larger than every group runs on all pCPUs, its demand spread
    /// over the groups.
    fn place(snapshot: &Snapshot, m: &mut Measured) {
        let mut order: Vec<usize> = (0..m.members.len())
            .filter(|&k| m.members[k].group.is_none())
            .collect();
        order.sort_by(|&a, &b| m.members[b].demand.total_cmp(&m.members[a].demand));
        let n_pcpus = snapshot.host().pcpus.len() as f64;
        for k in order {
            let size = snapshot.vms()[m.members[k].vm].vcpus.len();
            let fits = |g: &usize| m.groups[*g].len() >= size;
            if !(0..m.groups.len()).any(|g| fits(&g)) {
                let (demand, var) = (m.members[k].demand, m.members[k].noise_var);
                for g in 0..m.groups.len() {
                    let share = m.groups[g].len() as f64 / n_pcpus;
                    m.load[g] += demand * share;
                    m.noise_var[g] += var * share * share;
                }
                continue;
            }
            let demand = m.members[k].demand;
            let g = (0..m.groups.len())
                .filter(fits)
                .min_by(|&a, &b| {
                    let after = |g: usize| (m.load[g] + demand) / m.offer[g];
                    after(a)
                        .total_cmp(&after(b))
                        .then(m.vcpus[a].cmp(&m.vcpus[b]))
                        .then(a.cmp(&b))
                })
                .unwrap_or(0);
            m.assign(k, g, size);
        }
    }

    /// Steps 2 and 4: the spread, the settle phase, and the one move worth making (made in
    /// `m` when it is).
    fn judge(&mut self, snapshot: &Snapshot, m: &mut Measured) -> (Verdict, usize) {
        let now = snapshot.wall_s();
        let (half_life, sigmas) = (self.params.half_life_s, self.params.confidence_sigmas);
        let u = m.utilization(&m.load);
        let spread = Measured::spread(&u);
        let busiest = (0..m.groups.len())
            .max_by(|&a, &b| u[a].total_cmp(&u[b]).then(b.cmp(&a)))
            .unwrap_or(0);
        if m.groups.len() == 1 {
            return (Verdict::OneGroup, busiest);
        }
        // Seen inside the set it was sent to (or gone).
        let landed = |uuid: &String, to: &CpuSet| {
            snapshot
                .vms()
                .iter()
                .filter(|vm| vm.uuid == *uuid)
                .all(|vm| {
                    vm.vcpus.iter().all(|v| {
                        !v.affinity.is_empty() && v.affinity.iter().all(|c| to.contains(c))
                    })
                })
        };
        let host = Grouped { snapshot, m: &*m };
        if let Some(left_s) = self.outcomes.settling(now, half_life, landed, &host) {
            return (Verdict::Settling { left_s }, busiest);
        }
        if spread <= self.params.trigger_points {
            return (Verdict::Within { spread }, busiest);
        }
        let mut best: Option<(usize, usize, f64)> = None;
        for (k, member) in m.members.iter().enumerate() {
            if member.group != Some(busiest) || member.demand <= 0.0 {
                continue;
            }
            let vm = &snapshot.vms()[member.vm];
            for to in
                (0..m.groups.len()).filter(|&g| g != busiest && m.groups[g].len() >= vm.vcpus.len())
            {
                // Sent back where the last move took it from, it is predicted at the demand
                // it had there.
                let back = self.outcomes.demand_back(now, &vm.uuid, &m.sets[to]);
                let mut after = m.load.clone();
                after[busiest] -= member.demand;
                after[to] += back.unwrap_or(member.demand);
                let s = Measured::spread(&m.utilization(&after));
                if s < spread && best.is_none_or(|(_, _, b)| s < b) {
                    best = Some((k, to, s));
                }
            }
        }
        let Some((k, to, predicted)) = best else {
            return (Verdict::NoBetter { spread }, busiest);
        };
        let gain_noise = (m.noise_var[busiest].sqrt() * 100.0 / m.offer[busiest])
            .hypot(m.noise_var[to].sqrt() * 100.0 / m.offer[to]);
        let bar = self.params.move_cost_points + sigmas * gain_noise;
        let vm = &snapshot.vms()[m.members[k].vm];
        let moved = vec![(vm.uuid.clone(), m.sets[busiest].clone(), m.sets[to].clone())];
        let gain = spread - predicted;
        let error = self.outcomes.error_at(now);
        let mv = Move {
            vm: vm.name.clone(),
            from: m.sets[busiest].clone(),
            to: m.sets[to].clone(),
            spread,
            predicted,
            error,
            needed: bar + error,
        };
        if gain <= mv.needed {
            return (Verdict::NotWorth(mv), busiest);
        }
        let size = vm.vcpus.len();
        let member = &m.members[k];
        m.load[busiest] -= member.demand;
        m.noise_var[busiest] -= member.noise_var;
        m.vcpus[busiest] -= size;
        m.assign(k, to, size);
        // What it touches: the VMs of the two groups.
        let touched = m
            .members
            .iter()
            .filter(|member| member.group == Some(busiest) || member.group == Some(to))
            .map(|member| (snapshot.vms()[member.vm].uuid.clone(), member.measured()))
            .collect();
        self.outcomes.made(outcome::Move {
            at_s: now,
            moved,
            touched,
        });
        (Verdict::Moving(mv), busiest)
    }

    /// Step 5: the plan. Every managed VM's vCPUs get its group's pCPUs; its emulator threads
    /// the pCPUs outside the busiest group (which changes only when another group is busier by
    /// `trigger_points`); its weight and cap the operator's. Each only where it differs.
    fn plan(
        &mut self,
        snapshot: &Snapshot,
        m: &Measured,
        dedication: &Dedication,
        busiest: usize,
        verdict: &Verdict,
    ) -> CpuPlan {
        let host = snapshot.host();
        let u = m.utilization(&m.load);
        let held = self.busiest.and_then(|first| {
            m.groups
                .iter()
                .position(|g| host.pcpus[g[0]].pcpu.id == first)
        });
        let off = match held {
            Some(h) if u[busiest] - u[h] <= self.params.trigger_points => h,
            _ => busiest,
        };
        self.busiest = Some(host.pcpus[m.groups[off][0]].pcpu.id);
        // Off the busiest group, and off dedicated pCPUs.
        let emulator: Option<CpuSet> = if m.groups.len() > 1 {
            let keep = |i: usize| m.group_of_pcpu[i] != off && m.group_of_pcpu[i] != usize::MAX;
            Some(
                (0..host.pcpus.len())
                    .filter(|&i| keep(i))
                    .map(|i| host.pcpus[i].pcpu.id)
                    .collect(),
            )
        } else {
            (!dedication.reserved.is_empty()).then(|| dedication.shared.clone())
        };
        let everywhere = dedication.shared.clone();
        let mut plan = CpuPlan::keep(verdict.to_string());
        plan.pins.extend(dedication.pins(snapshot));
        for (name, _) in &dedication.vms {
            let Some(vm) = snapshot.vm(name) else {
                continue;
            };
            let wanted = CpuTune {
                emulator: emulator.clone(),
                ..vm.operator_tune()
            };
            if let Some(change) = vm.cputune.changes_to(&wanted) {
                plan.tune(&vm.name, change);
            }
        }
        let mut pinned_on: HashMap<u32, usize> = HashMap::new();
        for member in &m.members {
            let vm = &snapshot.vms()[member.vm];
            let set = member.group.map_or(&everywhere, |g| &m.sets[g]);
            place(vm, set, &mut pinned_on, &mut plan);
            let wanted = CpuTune {
                emulator: emulator.clone(),
                ..vm.operator_tune()
            };
            if let Some(change) = vm.cputune.changes_to(&wanted) {
                plan.tune(&vm.name, change);
            }
        }
        plan
    }

    /// One tick: the plan and the verdict behind it.
    fn step(&mut self, snapshot: &Snapshot) -> (CpuPlan, Verdict) {
        let dedication = dedicate(snapshot);
        let mut m = self.measure(snapshot, &dedication);
        if m.groups.is_empty() || (m.members.is_empty() && dedication.vms.is_empty()) {
            let verdict = Verdict::NothingToPlace;
            return (CpuPlan::keep(verdict.to_string()), verdict);
        }
        Self::place(snapshot, &mut m);
        let (verdict, busiest) = self.judge(snapshot, &mut m);
        let plan = self.plan(snapshot, &m, &dedication, busiest, &verdict);
        (plan, verdict)
    }
}

/// Pins `vm`'s vCPUs into `set`: the whole set, or (`placement = "pin"`) one pCPU each, kept
/// where already inside the set, else the set's pCPU with the fewest vCPUs pinned so far.
fn place(vm: &VmView, set: &CpuSet, pinned_on: &mut HashMap<u32, usize>, plan: &mut CpuPlan) {
    for v in &vm.vcpus {
        if vm.control.placement != Some(Placement::Pin) {
            if v.affinity != *set {
                plan.pin(&vm.name, v.id, set.as_slice());
            }
            continue;
        }
        let cpu = match v.affinity.only().filter(|&c| set.contains(c)) {
            Some(c) => c,
            None => {
                let c = set
                    .iter()
                    .min_by_key(|c| (pinned_on.get(c).copied().unwrap_or(0), *c))
                    .unwrap_or_default();
                plan.pin(&vm.name, v.id, &[c]);
                c
            }
        };
        *pinned_on.entry(cpu).or_default() += 1;
    }
}

impl CpuPolicy for GroupBalance {
    fn decide(&mut self, snapshot: &Snapshot) -> CpuPlan {
        self.step(snapshot).0
    }

    fn learned(&self) -> Option<vcoord_api::params::Table> {
        self.outcomes.learned()
    }

    fn relearn(&mut self, learned: &vcoord_api::params::Table) -> Result<(), String> {
        self.outcomes.relearn(learned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vcoord_api::snapshot::{HostView, MemoryView, VcpuView};
    use vcoord_api::{Params, Pcpu, VmControl};

    /// A host of `nodes` NUMA nodes of `per_node` pCPUs; VMs (name, vCPU demands, affinity).
    fn snap(nodes: u32, per_node: u32, t: f64, vms: &[(&str, &[f64], &[u32])]) -> Snapshot {
        let pcpus = (0..nodes * per_node)
            .map(|id| Pcpu {
                id,
                core_id: Some(id),
                socket_id: Some(id / per_node),
                node_id: Some(id / per_node),
            })
            .collect();
        let host = HostView::new(pcpus, 1 << 24, 1 << 23);
        let vms = vms.iter().map(|(name, demands, affinity)| VmView {
            name: name.to_string(),
            uuid: name.to_string(),
            vcpus: demands
                .iter()
                .enumerate()
                .map(|(i, &d)| VcpuView {
                    id: i as u32,
                    load_pct: Some(d),
                    wait_pct: Some(0.0),
                    pcpu: affinity.first().copied(),
                    affinity: affinity.iter().copied().collect(),
                })
                .collect(),
            memory: MemoryView::default(),
            oom_events: None,
            control: VmControl::default(),
            cputune: CpuTune::default(),
        });
        Snapshot::builder(host)
            .tick(t as u64)
            .interval_s(1.0)
            .wall_s(t)
            .vms(vms)
            .loads_from_vcpus()
            .build()
            .unwrap()
    }

    fn sets_of(plan: &CpuPlan, vm: &str) -> Vec<String> {
        plan.pins
            .iter()
            .filter(|p| p.vm == vm)
            .map(|p| p.cpus.to_string())
            .collect()
    }

    #[test]
    fn new_vms_get_a_whole_group_each_and_emulators_stay_off_the_busiest() {
        let mut p = GroupBalance::default();
        let all: &[u32] = &[0, 1, 2, 3, 4, 5, 6, 7];
        let s = snap(
            2,
            4,
            1.0,
            &[("a", &[90.0, 90.0], all), ("b", &[50.0, 50.0], all)],
        );
        let plan = p.decide(&s);
        assert_eq!(sets_of(&plan, "a"), vec!["0-3", "0-3"]);
        assert_eq!(sets_of(&plan, "b"), vec!["4-7", "4-7"]);
        // Group 0-3 is the busiest: emulator threads go to 4-7.
        let emu: Vec<String> = plan
            .tunes
            .iter()
            .map(|t| t.tune.emulator.clone().unwrap().to_string())
            .collect();
        assert_eq!(emu, vec!["4-7", "4-7"]);
    }

    #[test]
    fn a_vm_moves_whole_only_when_groups_differ_beyond_noise_and_then_stays() {
        let mut p = GroupBalance::default();
        let g0: &[u32] = &[0, 1, 2, 3];
        let g1: &[u32] = &[4, 5, 6, 7];
        let mut moved: Option<String> = None;
        let mut moves = 0;
        for t in 1..=40 {
            // Two busy VMs and a light one in group 0, an idle one in group 1.
            let home = |vm: &str| if moved.as_deref() == Some(vm) { g1 } else { g0 };
            let s = snap(
                2,
                4,
                t as f64,
                &[
                    ("a", &[80.0, 80.0], home("a")),
                    ("b", &[80.0, 80.0], home("b")),
                    ("c", &[20.0], g0),
                    ("d", &[5.0], g1),
                ],
            );
            let plan = p.decide(&s);
            if let Some(pin) = plan.pins.first() {
                moves += 1;
                assert!(
                    ["a", "b"].contains(&pin.vm.as_str()),
                    "tick {t}: {}",
                    plan.reason
                );
                assert_eq!(sets_of(&plan, &pin.vm), vec!["4-7", "4-7"], "the whole VM");
                assert_eq!(plan.pins.len(), 2);
                moved = Some(pin.vm.clone());
            }
        }
        assert_eq!(moves, 1, "one whole VM moved, once");
        // Two equal groups are left alone whatever the noise.
        let mut p = GroupBalance::default();
        for t in 1..=40 {
            let wobble = if t % 2 == 0 { 8.0 } else { -8.0 };
            let s = snap(
                2,
                4,
                t as f64,
                &[("a", &[60.0 + wobble], g0), ("b", &[60.0 - wobble], g1)],
            );
            let plan = p.decide(&s);
            assert!(plan.pins.is_empty(), "tick {t}: {}", plan.reason);
        }
    }

    /// A move is waited for only once seen where it was sent: a move never made (a dry run)
    /// is decided again at the next tick, not settled on.
    #[test]
    fn a_move_not_seen_where_it_was_sent_is_not_settled_on() {
        let g0: &[u32] = &[0, 1, 2, 3];
        let g1: &[u32] = &[4, 5, 6, 7];
        // `moved` seen in group 1, the other busy VM in group 0.
        let at = |t: f64, moved: Option<&str>| {
            let home = |vm: &str| if moved == Some(vm) { g1 } else { g0 };
            snap(
                2,
                4,
                t,
                &[
                    ("a", &[80.0, 80.0], home("a")),
                    ("b", &[80.0, 80.0], home("b")),
                    ("d", &[5.0], g1),
                ],
            )
        };
        let mut p = GroupBalance::default();
        let (t, vm) = (1..=20)
            .find_map(|t| match p.step(&at(t as f64, None)).1 {
                Verdict::Moving(m) => Some((t as f64, m.vm)),
                _ => None,
            })
            .expect("a VM moves");
        // Not seen there: moving again, not settling.
        let (_, v) = p.step(&at(t + 1.0, None));
        assert!(matches!(v, Verdict::Moving(_)), "{v}");
        // Seen there: settling.
        let (_, v) = p.step(&at(t + 2.0, Some(&vm)));
        assert!(matches!(v, Verdict::Settling { .. }), "{v}");
    }

    /// With `group_by = "core"` on four single-thread cores, a dedicated VM of two vCPUs takes
    /// pCPUs 3 and 2; the others' groups are cores 0 and 1 only, and every emulator thread
    /// stays off the dedicated pCPUs.
    #[test]
    fn a_dedicated_vm_takes_the_top_cores_and_the_groups_are_the_rest() {
        let mut p = GroupBalance::new(GroupBalanceParams {
            group_by: GroupBy::Core,
            ..GroupBalanceParams::default()
        })
        .unwrap();
        let all: &[u32] = &[0, 1, 2, 3];
        let s = snap(
            1,
            4,
            1.0,
            &[
                ("lat", &[30.0, 30.0], all),
                ("a", &[80.0], all),
                ("b", &[60.0], all),
            ],
        );
        let mut vms = s.vms().to_vec();
        for vm in vms.iter_mut().filter(|vm| vm.name == "lat") {
            vm.control.placement = Some(Placement::Dedicated);
        }
        let s = Snapshot::builder(s.host().clone())
            .tick(1)
            .interval_s(1.0)
            .wall_s(1.0)
            .vms(vms)
            .build()
            .unwrap();
        let plan = p.decide(&s);
        assert_eq!(sets_of(&plan, "lat"), vec!["3", "2"], "{plan:?}");
        let others: Vec<String> = ["a", "b"]
            .iter()
            .flat_map(|vm| sets_of(&plan, vm))
            .collect();
        assert!(
            others.iter().all(|set| set == "0" || set == "1"),
            "{others:?}"
        );
        assert!(
            plan.tunes.iter().all(|t| t
                .tune
                .emulator
                .as_ref()
                .is_some_and(|e| !e.contains(2) && !e.contains(3))),
            "{plan:?}"
        );
    }

    /// Non-VM load is tracked from its first reading: a host process seen busy from the start
    /// counts nearly whole at once, not as a zero prior creeping up; and by what it wanted (run
    /// and wait), not only by what it got.
    #[test]
    fn non_vm_load_starts_from_its_first_reading() {
        let g0: &[u32] = &[0, 1, 2, 3];
        let mut p = GroupBalance::default();
        let busy = |t: f64| {
            let s = snap(2, 4, t, &[("a", &[10.0], g0)]);
            let mut host = s.host().clone();
            for pcpu in host.pcpus.iter_mut() {
                pcpu.other_pct = (pcpu.pcpu.id != 0).then_some(0.0);
            }
            s.to_builder()
                .host(host)
                .tick(t as u64)
                .interval_s(1.0)
                .wall_s(t)
                .build()
                .unwrap()
        };
        // Unmeasured at first: nothing is stored for it.
        p.step(&busy(1.0));
        assert!(!p.other.contains_key(&0));
        let mut s = busy(2.0);
        let mut host = s.host().clone();
        host.pcpus[0].other_pct = Some(60.0);
        // What the host's threads wanted counts: their run-queue wait beside their run time.
        host.pcpus[0].other_wait_pct = Some(30.0);
        s = s
            .to_builder()
            .host(host)
            .tick(2)
            .interval_s(1.0)
            .wall_s(2.0)
            .build()
            .unwrap();
        p.step(&s);
        assert_eq!(p.other[&0].mean, 90.0);
    }

    #[test]
    fn a_vm_goes_only_where_it_fits_and_one_larger_than_every_group_runs_everywhere() {
        let mut p = GroupBalance::default();
        let all: &[u32] = &[0, 1, 2, 3];
        // Nodes of 2 pCPUs: a 3-vCPU VM fits none, a 2-vCPU VM fits either.
        let s = snap(
            2,
            2,
            1.0,
            &[("pair", &[50.0, 50.0], all), ("wide", &[50.0; 3], all)],
        );
        let plan = p.decide(&s);
        assert_eq!(
            sets_of(&plan, "wide"),
            Vec::<String>::new(),
            "already everywhere"
        );
        assert_eq!(sets_of(&plan, "pair"), vec!["0-1", "0-1"]);
        // Pinned by someone into one pCPU of node 0, it is taken as outside any group: moved
        // back onto all pCPUs.
        let s = snap(
            2,
            2,
            2.0,
            &[("pair", &[50.0, 50.0], &[0, 1]), ("wide", &[50.0; 3], &[0])],
        );
        let plan = p.decide(&s);
        assert_eq!(sets_of(&plan, "wide"), vec!["0-3", "0-3", "0-3"]);
        assert!(sets_of(&plan, "pair").is_empty(), "{}", plan.reason);
    }

    #[test]
    fn weights_caps_and_placement_follow_the_operator() {
        let mut p = GroupBalance::new(
            GroupBalanceParams::from_table(&"group_by = \"core\"".parse().unwrap()).unwrap(),
        )
        .unwrap();
        let s = snap(1, 2, 1.0, &[("a", &[100.0, 100.0], &[0, 1])]);
        let mut vm = s.vms()[0].clone();
        vm.control.cpu_shares = Some(2048);
        vm.control.cpu_max_pct = Some(50.0);
        vm.control.placement = Some(Placement::Pin);
        let s = Snapshot::builder(s.host().clone())
            .wall_s(1.0)
            .interval_s(1.0)
            .vms([vm])
            .build()
            .unwrap();
        let plan = p.decide(&s);
        // Groups are single cores, too small for its two vCPUs: it runs on all pCPUs, each
        // vCPU pinned to one of them.
        assert_eq!(sets_of(&plan, "a"), vec!["0", "1"]);
        let t = &plan.tunes[0].tune;
        assert_eq!(t.cpu_shares, Some(2048));
        // 50% of a pCPU over two vCPUs: 25 ms of each 100 ms each.
        assert_eq!(
            (t.vcpu_quota_us, t.vcpu_period_us),
            (Some(25_000), Some(100_000))
        );
        assert_eq!(t.emulator.as_ref().map(|e| e.to_string()), Some("1".into()));
        let err =
            GroupBalanceParams::from_table(&"group_by = \"llc\"".parse().unwrap()).unwrap_err();
        assert_eq!(err.key, "group_by");
    }
}
