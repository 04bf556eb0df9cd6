use vcoord_api::{CpuPlan, CpuPolicy, ParamError, PcpuView, Policy, Snapshot};

vcoord_api::params! {
    /// Parameters of `one-move`.
    pub struct OneMoveParams {
        /// act when the busiest and the idlest pCPU differ by more than this
        pub gap_pct: f64 = 20.0, unit "percent points", range 1.0..=100.0;
    }
}

/// Each tick, moves the busiest vCPU of the busiest pCPU to the idlest pCPU, when the two
/// pCPUs differ by more than `gap_pct` and the move narrows the gap.
pub struct OneMove {
    gap_pct: f64,
}

impl Policy for OneMove {
    const NAME: &'static str = "one-move";
    const DESCRIPTION: &'static str = "moves one vCPU per tick from the busiest to the idlest pCPU";
    type Params = OneMoveParams;

    fn new(params: OneMoveParams) -> Result<Self, ParamError> {
        Ok(Self {
            gap_pct: params.gap_pct,
        })
    }
}

impl CpuPolicy for OneMove {
    fn decide(&mut self, s: &Snapshot) -> CpuPlan {
        let pcpus = &s.host().pcpus;
        let by_load = |a: &&PcpuView, b: &&PcpuView| a.load_pct.total_cmp(&b.load_pct);
        let (Some(busy), Some(idle)) = (pcpus.iter().max_by(by_load), pcpus.iter().min_by(by_load))
        else {
            return CpuPlan::keep("no pCPUs");
        };
        let gap = busy.load_pct - idle.load_pct;
        if gap <= self.gap_pct {
            return CpuPlan::keep(format!("gap {gap:.0} points"));
        }
        // The busiest vCPU on the busy pCPU that fits in the gap.
        let candidate = s
            .vms()
            .iter()
            .flat_map(|vm| vm.vcpus.iter().map(move |v| (vm, v)))
            .filter(|(_, v)| v.placed_on() == Some(busy.pcpu.id))
            .filter_map(|(vm, v)| Some((vm, v, v.load_pct?)))
            .filter(|(_, _, load)| *load < gap)
            .max_by(|a, b| a.2.total_cmp(&b.2));
        let mut plan = CpuPlan::keep(format!("gap {gap:.0} points, nothing fits"));
        if let Some((vm, v, load)) = candidate {
            vcoord_api::info!(
                "moving {}/{} ({load:.0}%) to pCPU {}",
                vm.name,
                v.id,
                idle.pcpu.id
            );
            plan.pin(&vm.name, v.id, &[idle.pcpu.id]);
            plan.reason = format!("gap {gap:.0} points: one vCPU moved");
        }
        plan
    }
}
