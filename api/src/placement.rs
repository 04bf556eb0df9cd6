//! Placing vCPU demands on pCPUs: an exact search for the placement that is balanced with the
//! fewest vCPUs moved (small instances), and a move-by-move local search from the current
//! placement (any size). Items are `(home, demand)`: the pCPU index a vCPU is on now and what it
//! wants, in percent of one pCPU. Loads are summed without a cap, so an overloaded pCPU shows.
//! The `_over` variants start from a base load per pCPU: what vCPUs that must not move (an
//! operator's ignored VMs) put there.

use crate::stats::stdev;

/// Largest instance [`fewest_moves`] searches, in items.
pub const MAX_EXACT_ITEMS: usize = 64;

/// Outcome of [`fewest_moves`].
#[derive(Clone, Debug, PartialEq)]
pub enum Search {
    /// A balanced placement with the fewest moves: the pCPU index of each item, and how many
    /// items it moves.
    Found {
        /// pCPU index per item.
        assignment: Vec<usize>,
        /// Items not at their home.
        moves: usize,
    },
    /// No placement at all is within the bound.
    Impossible,
    /// The search gave up after visiting `limit` placements.
    TooLarge,
}

/// The placement of `items` on `pcpus` pCPUs whose loads have a standard deviation within
/// `bound` and that moves the fewest items from their home. Exact: iterative deepening over the
/// number of moves, trying for each item its home first. Gives up after `limit` visits.
pub fn fewest_moves(items: &[(usize, f64)], pcpus: usize, bound: f64, limit: u64) -> Search {
    fewest_moves_over(items, &vec![0.0; pcpus], bound, limit)
}

/// [`fewest_moves`] on pCPUs that carry `base` load already (one figure per pCPU).
pub fn fewest_moves_over(items: &[(usize, f64)], base: &[f64], bound: f64, limit: u64) -> Search {
    let pcpus = base.len();
    if pcpus == 0 || items.iter().any(|&(home, _)| home >= pcpus) {
        return Search::Impossible;
    }
    // The search recurses once per item: keep it shallow (and it is hopeless beyond this).
    if items.len() > MAX_EXACT_ITEMS {
        return Search::TooLarge;
    }
    // Heaviest first: the search prunes sooner. `order[k]` is the item placed k-th.
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| items[b].1.total_cmp(&items[a].1).then(a.cmp(&b)));
    let mut search = MoveSearch {
        items,
        order: &order,
        loads: base.to_vec(),
        chosen: items.iter().map(|i| i.0).collect(),
        bound,
        visited: 0,
        limit,
    };
    for budget in 0..=items.len() {
        if search.fits(0, budget) {
            let assignment = search.chosen.clone();
            let moves = assignment
                .iter()
                .zip(items)
                .filter(|(a, i)| **a != i.0)
                .count();
            return Search::Found { assignment, moves };
        }
        if search.visited > limit {
            return Search::TooLarge;
        }
    }
    Search::Impossible
}

struct MoveSearch<'a> {
    items: &'a [(usize, f64)],
    order: &'a [usize],
    loads: Vec<f64>,
    chosen: Vec<usize>,
    bound: f64,
    visited: u64,
    limit: u64,
}

impl MoveSearch<'_> {
    /// Whether the items from the k-th on can be placed, moving at most `moves`, into a
    /// balanced placement (recorded in `chosen`).
    fn fits(&mut self, k: usize, moves: usize) -> bool {
        self.visited += 1;
        if self.visited > self.limit {
            return false;
        }
        if k == self.order.len() {
            return stdev(&self.loads) <= self.bound;
        }
        let item = self.order[k];
        let (home, demand) = self.items[item];
        if self.place(k, item, home, demand, moves) {
            return true;
        }
        if moves == 0 {
            return false;
        }
        for p in 0..self.loads.len() {
            if p != home && self.place(k, item, p, demand, moves - 1) {
                return true;
            }
        }
        false
    }

    fn place(&mut self, k: usize, item: usize, p: usize, demand: f64, moves: usize) -> bool {
        self.loads[p] += demand;
        self.chosen[item] = p;
        let ok = self.fits(k + 1, moves);
        self.loads[p] -= demand;
        ok
    }
}

/// Moves items from their homes until the loads' stdev is within `bound`: each step takes the
/// most loaded pCPU and, of all moves of one of its items to another pCPU and all exchanges of
/// one of its items with another pCPU's, makes the one that lowers the spread most (a
/// transfer of about half the difference of the two loads; a single move when an exchange
/// gains no more). Among equally good single moves the target with the lowest
/// `penalty(item, to)` wins. Every step lowers the spread, so the result is never worse than
/// the start. Stops when nothing helps or after `max_steps` steps; a step costs about the
/// items on the fullest pCPU times the pCPUs it tries (log of their items for exchanges).
/// Returns the pCPU index of each item.
pub fn local_search(
    items: &[(usize, f64)],
    pcpus: usize,
    bound: f64,
    max_steps: usize,
    penalty: &dyn Fn(usize, usize) -> f64,
) -> Vec<usize> {
    local_search_over(items, &vec![0.0; pcpus], bound, max_steps, penalty)
}

/// [`local_search`] on pCPUs that carry `base` load already (one figure per pCPU).
pub fn local_search_over(
    items: &[(usize, f64)],
    base: &[f64],
    bound: f64,
    max_steps: usize,
    penalty: &dyn Fn(usize, usize) -> f64,
) -> Vec<usize> {
    let pcpus = base.len();
    let mut at: Vec<usize> = items
        .iter()
        .map(|i| i.0.min(pcpus.saturating_sub(1)))
        .collect();
    if pcpus < 2 {
        return at;
    }
    let mut loads = base.to_vec();
    // The items on each pCPU, lightest first, so that the partner of an exchange is found by
    // bisection rather than by trying every pair.
    let lighter = |a: usize, b: usize| items[a].1.total_cmp(&items[b].1).then(a.cmp(&b));
    let mut on: Vec<Vec<usize>> = vec![Vec::new(); pcpus];
    for (i, &(_, d)) in items.iter().enumerate() {
        loads[at[i]] += d;
        on[at[i]].push(i);
    }
    for list in &mut on {
        list.sort_by(|&a, &b| lighter(a, b));
    }
    let take = |list: &mut Vec<usize>, i: usize| {
        if let Some(k) = list.iter().position(|&x| x == i) {
            list.remove(k);
        }
    };
    let put = |list: &mut Vec<usize>, i: usize| {
        let k = list.partition_point(|&x| lighter(x, i).is_lt());
        list.insert(k, i);
    };
    const EPS: f64 = 1e-9;
    // The pCPUs from the emptiest, kept in order as loads change (two per step), rather than
    // sorted again at every step.
    let before = |loads: &[f64], a: usize, b: usize| loads[a].total_cmp(&loads[b]).then(a.cmp(&b));
    let mut by_load: Vec<usize> = (0..pcpus).collect();
    by_load.sort_by(|&a, &b| before(&loads, a, b));
    let reorder = |by_load: &mut Vec<usize>, loads: &[f64], p: usize| {
        if let Some(k) = by_load.iter().position(|&q| q == p) {
            by_load.remove(k);
        }
        let k = by_load.partition_point(|&q| before(loads, q, p).is_lt());
        by_load.insert(k, p);
    };
    for _ in 0..max_steps {
        if stdev(&loads) <= bound {
            break;
        }
        let hi = (0..pcpus)
            .max_by(|&a, &b| loads[a].total_cmp(&loads[b]).then(b.cmp(&a)))
            .expect("pCPUs");
        // Moving x of demand from the fullest pCPU to one `room` below it lowers the sum of
        // squared loads (and so the spread) by x(room - x), twice over: best near half the
        // room. No transfer exceeds the largest item there, which bounds what a pCPU can gain:
        // the emptiest are tried first, and the rest skipped once they cannot do better.
        let gain = |x: f64, room: f64| x * (room - x);
        let largest = on[hi].last().map_or(0.0, |&i| items[i].1);
        let order = by_load.iter().copied().filter(|&p| p != hi);
        // Best single move (gain, penalty, item, to) and best exchange (gain, item, other).
        let mut single: Option<(f64, f64, usize, usize)> = None;
        let mut swap: Option<(f64, usize, usize)> = None;
        for to in order {
            let room = loads[hi] - loads[to];
            let best = single.map_or(0.0, |s| s.0).max(swap.map_or(0.0, |s| s.0));
            if room <= EPS || gain(largest.min(room / 2.0), room) < best - EPS {
                break;
            }
            // The best single move is of the item nearest half the room (the gain falls away
            // from there on both sides); those within EPS of it are ties, broken by penalty.
            let list = &on[hi];
            let k = list.partition_point(|&i| items[i].1 < room / 2.0);
            let peak = [k.checked_sub(1), (k < list.len()).then_some(k)]
                .into_iter()
                .flatten()
                .map(|x| gain(items[list[x]].1, room))
                .fold(f64::NEG_INFINITY, f64::max);
            let near = |x: &usize| gain(items[list[*x]].1, room) >= peak - EPS;
            let left = (0..k).rev().take_while(near);
            let right = (k..list.len()).take_while(near);
            for x in left.chain(right) {
                let i = list[x];
                let g = gain(items[i].1, room);
                if g > EPS {
                    let pen = penalty(i, to);
                    if single.is_none_or(|(b, p, ..)| g > b + EPS || (g >= b - EPS && pen < p)) {
                        single = Some((g, pen, i, to));
                    }
                }
            }
            let best = single.map_or(0.0, |s| s.0).max(swap.map_or(0.0, |s| s.0));
            let smallest = on[to].first().map_or(f64::INFINITY, |&j| items[j].1);
            if on[to].is_empty() || gain((largest - smallest).min(room / 2.0), room) <= best + EPS {
                continue;
            }
            // For each item here, the best partner there is the one whose demand is nearest
            // half the room below it: one of the two either side of that point.
            for &i in &on[hi] {
                let want = items[i].1 - room / 2.0;
                let k = on[to].partition_point(|&j| items[j].1 < want);
                for &j in &on[to][k.saturating_sub(1)..(k + 1).min(on[to].len())] {
                    let g = gain(items[i].1 - items[j].1, room);
                    if g > EPS && swap.is_none_or(|(b, ..)| g > b + EPS) {
                        swap = Some((g, i, j));
                    }
                }
            }
        }
        // One move rather than two when they gain alike.
        match (single, swap) {
            (Some((g, _, i, to)), s) if s.is_none_or(|(gs, ..)| g >= gs - EPS) => {
                let d = items[i].1;
                loads[hi] -= d;
                loads[to] += d;
                take(&mut on[hi], i);
                put(&mut on[to], i);
                at[i] = to;
                reorder(&mut by_load, &loads, hi);
                reorder(&mut by_load, &loads, to);
            }
            (_, Some((_, i, j))) => {
                let lo = at[j];
                let e = items[i].1 - items[j].1;
                loads[hi] -= e;
                loads[lo] += e;
                take(&mut on[hi], i);
                take(&mut on[lo], j);
                put(&mut on[hi], j);
                put(&mut on[lo], i);
                at[i] = lo;
                at[j] = hi;
                reorder(&mut by_load, &loads, hi);
                reorder(&mut by_load, &loads, lo);
            }
            _ => break,
        }
    }
    at
}

/// Loads of `pcpus` pCPUs under an assignment.
pub fn loads_of(items: &[(usize, f64)], assignment: &[usize], pcpus: usize) -> Vec<f64> {
    loads_of_over(items, assignment, &vec![0.0; pcpus])
}

/// Loads under an assignment of pCPUs that carry `base` load already.
pub fn loads_of_over(items: &[(usize, f64)], assignment: &[usize], base: &[f64]) -> Vec<f64> {
    let pcpus = base.len();
    let mut loads = base.to_vec();
    for (&(_, d), &p) in items.iter().zip(assignment) {
        if p < pcpus {
            loads[p] += d;
        }
    }
    loads
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every assignment of `items` to `m` pCPUs: the fewest moves among balanced ones.
    fn brute_force(items: &[(usize, f64)], m: usize, bound: f64) -> Option<usize> {
        let n = items.len();
        let mut best: Option<usize> = None;
        for code in 0..m.pow(n as u32) {
            let mut loads = vec![0.0; m];
            let mut moves = 0;
            let mut c = code;
            for &(home, demand) in items {
                let at = c % m;
                c /= m;
                loads[at] += demand;
                moves += usize::from(at != home);
            }
            if stdev(&loads) <= bound && best.is_none_or(|b| moves < b) {
                best = Some(moves);
            }
        }
        best
    }

    /// An instance: a pCPU count in `pcpus` and up to `items` vCPUs, each on one of them with a
    /// demand of 0 to 100.
    fn instance(
        pcpus: std::ops::RangeInclusive<usize>,
        items: std::ops::RangeInclusive<usize>,
    ) -> impl Strategy<Value = (usize, Vec<(usize, f64)>)> {
        pcpus.prop_flat_map(move |m| {
            let item = (0..m, 0u32..=100).prop_map(|(home, demand)| (home, f64::from(demand)));
            (Just(m), proptest::collection::vec(item, items.clone()))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn exact_search_equals_brute_force_on_small_instances(
            (m, items) in instance(2..=4, 1..=7),
            bound in proptest::sample::select(vec![5.0, 15.0, 40.0]),
        ) {
            let found = match fewest_moves(&items, m, bound, u64::MAX) {
                Search::Found { assignment, moves } => {
                    let loads = loads_of(&items, &assignment, m);
                    prop_assert!(stdev(&loads) <= bound, "{:?}", assignment);
                    Some(moves)
                }
                Search::Impossible => None,
                Search::TooLarge => return Err(TestCaseError::fail("gave up without a limit")),
            };
            prop_assert_eq!(found, brute_force(&items, m, bound));
        }

        #[test]
        fn local_search_never_worsens_and_stays_on_real_pcpus(
            (m, items) in instance(1..=8, 0..=24),
        ) {
            let home: Vec<usize> = items.iter().map(|i| i.0).collect();
            let before = stdev(&loads_of(&items, &home, m));
            let at = local_search(&items, m, 5.0, 100, &|_, _| 0.0);
            prop_assert!(at.iter().all(|&p| p < m));
            let after = stdev(&loads_of(&items, &at, m));
            prop_assert!(after <= before + 1e-9, "{} -> {}", before, after);
        }
    }

    #[test]
    fn eight_on_one_of_four_needs_six_moves() {
        let items = vec![(0, 100.0); 8];
        let Search::Found { moves, .. } = fewest_moves(&items, 4, 5.0, u64::MAX) else {
            panic!()
        };
        assert_eq!(moves, 6);
    }

    #[test]
    fn fixed_load_is_worked_around() {
        // pCPU 0 carries 100 that cannot move; two movable 50s go to pCPU 1.
        let items = vec![(0, 50.0), (0, 50.0)];
        let base = [100.0, 0.0];
        let Search::Found { assignment, moves } = fewest_moves_over(&items, &base, 30.0, u64::MAX)
        else {
            panic!()
        };
        assert_eq!((assignment, moves), (vec![1, 1], 2));
        let at = local_search_over(&items, &base, 5.0, 10, &|_, _| 0.0);
        assert_eq!(loads_of_over(&items, &at, &base), vec![100.0, 100.0]);
    }

    #[test]
    fn local_search_spreads_a_pile_with_one_move_each() {
        let items = vec![(0, 100.0); 16];
        let at = local_search(&items, 8, 5.0, 100, &|_, _| 0.0);
        let moved = at.iter().filter(|&&p| p != 0).count();
        assert_eq!(moved, 14);
        assert!(stdev(&loads_of(&items, &at, 8)) < 1e-9);
    }
}
