//! `spread`: a static, topology-aware CPU policy. Each vCPU is pinned to one pCPU when first
//! seen and stays there: vCPUs are spread so every pCPU carries as many as the others (within
//! one), across cores before SMT siblings, keeping a VM's vCPUs on one NUMA node where they fit
//! and apart from each other. vCPUs already pinned to a single pCPU keep it while that pCPU is
//! not over its share, so an evenly pinned host sees no change at all.
//!
//! It ignores load: use it where placement should be predictable (the static pinning of
//! Kubernetes' CPU manager or Nova), or as a baseline in `vcoord compare`.

use std::collections::{BTreeMap, HashMap};

use vcoord_plugin::{CpuPlan, CpuPolicy, ParamError, Pcpu, Policy, Snapshot};

vcoord_plugin::params! {
    /// Parameters of `spread`.
    pub struct SpreadParams {
        /// move vCPUs again when VMs leave and pCPU counts differ by two or more
        pub rebalance: bool = true, unit "", range 0..=1;
    }
}

/// Where each vCPU (by VM name and vCPU id) is pinned by this policy.
pub struct Spread {
    placed: HashMap<(String, u32), u32>,
    rebalance: bool,
}

impl Policy for Spread {
    const NAME: &'static str = "spread";
    const DESCRIPTION: &'static str =
        "pins each vCPU once, evenly across pCPUs, cores before SMT siblings (ignores load)";
    type Params = SpreadParams;

    fn new(params: SpreadParams) -> Result<Self, ParamError> {
        Ok(Self {
            placed: HashMap::new(),
            rebalance: params.rebalance,
        })
    }
}

impl CpuPolicy for Spread {
    fn decide(&mut self, snapshot: &Snapshot) -> CpuPlan {
        let pcpus: Vec<&Pcpu> = snapshot.host().pcpus.iter().map(|p| &p.pcpu).collect();
        if pcpus.is_empty() {
            return CpuPlan::keep("no pCPUs");
        }
        // Forget vCPUs that are gone and placements on pCPUs that are gone. VMs the operator
        // left alone are not placed.
        let alive: HashMap<(String, u32), Option<u32>> = snapshot
            .vms()
            .iter()
            .filter(|vm| vm.control.cpu_managed)
            .flat_map(|vm| {
                vm.vcpus
                    .iter()
                    .map(move |v| ((vm.name.to_string(), v.id), v.affinity.only()))
            })
            .collect();
        self.placed.retain(|key, pcpu| {
            alive.get(key) == Some(&Some(*pcpu)) && pcpus.iter().any(|p| p.id == *pcpu)
        });

        let total = alive.len();
        let quota = total.div_ceil(pcpus.len());
        let mut count: BTreeMap<u32, usize> = pcpus.iter().map(|p| (p.id, 0)).collect();
        for pcpu in self.placed.values() {
            *count.entry(*pcpu).or_default() += 1;
        }

        let mut plan = CpuPlan::default();
        let mut moved = 0;
        for vm in snapshot.vms().iter().filter(|vm| vm.control.cpu_managed) {
            for v in vm.vcpus.iter() {
                let key = (vm.name.to_string(), v.id);
                if self.placed.contains_key(&key) {
                    continue;
                }
                // Adopt an existing single-pCPU pin while that pCPU has room.
                if let Some(p) = v.affinity.only() {
                    if count.get(&p).is_some_and(|&c| c < quota) {
                        *count.get_mut(&p).expect("known pCPU") += 1;
                        self.placed.insert(key, p);
                        continue;
                    }
                }
                let target = self.choose(&pcpus, &count, &vm.name);
                *count.get_mut(&target).expect("known pCPU") += 1;
                self.placed.insert(key, target);
                plan.pin(&vm.name, v.id, &[target]);
                moved += 1;
            }
        }
        if self.rebalance {
            moved += self.even_out(&mut count, &mut plan);
        }
        plan.reason = if moved == 0 {
            format!("{total} vCPUs spread, at most {quota} per pCPU")
        } else {
            format!("placed {moved} vCPUs, at most {quota} per pCPU")
        };
        plan
    }
}

impl Spread {
    /// The best pCPU for a new vCPU of `vm`: fewest vCPUs, then fewest on its core, then on the
    /// node where the VM already is, then without another vCPU of the VM, then lowest id.
    fn choose(&self, pcpus: &[&Pcpu], count: &BTreeMap<u32, usize>, vm: &str) -> u32 {
        let node_of = |id: u32| pcpus.iter().find(|p| p.id == id).and_then(|p| p.node_id);
        let mine: Vec<u32> = self
            .placed
            .iter()
            .filter(|((name, _), _)| name == vm)
            .map(|(_, p)| *p)
            .collect();
        let my_node = mine.iter().find_map(|&p| node_of(p));
        let core_load = |p: &Pcpu| -> usize {
            match (p.core_id, p.socket_id) {
                (Some(core), socket) => pcpus
                    .iter()
                    .filter(|q| q.core_id == Some(core))
                    .filter(|q| q.socket_id == socket)
                    .map(|q| count[&q.id])
                    .sum(),
                _ => count[&p.id],
            }
        };
        pcpus
            .iter()
            .min_by_key(|p| {
                (
                    count[&p.id],
                    core_load(p),
                    my_node.is_some() && p.node_id != my_node,
                    mine.contains(&p.id),
                    p.id,
                )
            })
            .map(|p| p.id)
            .expect("at least one pCPU")
    }

    /// Moves vCPUs from pCPUs with two more than another (after VMs left) until counts differ
    /// by at most one. Returns how many moved.
    fn even_out(&mut self, count: &mut BTreeMap<u32, usize>, plan: &mut CpuPlan) -> usize {
        let mut moved = 0;
        loop {
            let (&most, &high) = count
                .iter()
                .max_by_key(|(id, c)| (**c, u32::MAX - **id))
                .expect("pCPUs");
            let (&least, &low) = count
                .iter()
                .min_by_key(|(id, c)| (**c, **id))
                .expect("pCPUs");
            if high < low + 2 {
                return moved;
            }
            // Move the last-placed vCPU (by VM name and id) of the fullest pCPU.
            let victim = self
                .placed
                .iter()
                .filter(|(_, p)| **p == most)
                .map(|(k, _)| k.clone())
                .max()
                .expect("a vCPU on the fullest pCPU");
            self.placed.insert(victim.clone(), least);
            *count.get_mut(&most).expect("known") -= 1;
            *count.get_mut(&least).expect("known") += 1;
            plan.pins
                .retain(|p| !(p.vm == victim.0 && p.vcpu == victim.1));
            plan.pin(&victim.0, victim.1, &[least]);
            moved += 1;
        }
    }
}

vcoord_plugin::export_plugin! {
    name: "spread",
    description: "pins each vCPU once, evenly across pCPUs, cores before SMT siblings (ignores load)",
    cpu: Spread,
}
