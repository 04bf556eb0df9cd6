//! Judging a policy's moves by their outcomes, for the CPU policies that balance a spread: the
//! settle phase after a move, and the predictor's own error entering the bar the next move must
//! clear.
//!
//! A policy that moves things (vCPUs, VMs) predicts the spread it will reach, taking each thing's
//! demand (what it ran plus what it waited to run) to stay what it is, wherever it runs. What a
//! thing runs is its guest's doing; what it waits is its place's too: a vCPU sent beside a host
//! thread's bursts waits behind them, one taken off a crowded pCPU stops waiting, and those it
//! joins wait more. So what a move did to the demand of a thing it touched (a moved thing, what
//! shares a place with one before or after it, the host's own work there) is the change in its
//! wait, where its demand changed the same way ([`Demand::moved_by`]); the rest is its guest
//! turning busier or idler. Once the move is seen where it was sent and has settled for
//! [`SETTLE_HALF_LIVES`] half-lives of the policy's estimates, the spread now is set against
//! the spread now without what the move did: what that adds (over the share of it the estimates
//! show by now) is a miss. What the guests and the host did meanwhile on their own (a boot
//! ending, a host process starting) is no miss of the move's: the predictor never claimed to
//! foresee it. For the same reason a move that sends things back where an earlier one took them
//! from is judged like any other, by its own outcome, not counted a miss of the earlier move.
//! But it is predicted better: a thing sent back within [`RETURN_WINDOW_S`] to where the last
//! move took it from is predicted at the demand it had there ([`Outcomes::demand_back`]), the
//! wait it shed by leaving included; a swap back onto a pCPU whose host thread made it wait
//! is then seen to gain nothing.
//! The prediction error E ([`PredictionError`]) rises at once to a miss larger than it, moves
//! [`MISS_WEIGHT`] of the way down to a smaller one (0 when a prediction held), and halves every
//! [`MISS_HALF_LIFE_S`] without an outcome. A policy adds E to the gain a move must show.

/// After a move, a policy waits this many half-lives of its estimates: the moved things'
/// estimates are then three quarters of the way to their new figures.
pub const SETTLE_HALF_LIVES: f64 = 2.0;

/// An outcome that missed by less than the prediction error moves it this share of the way
/// down (a larger miss sets it): one good prediction halves it.
pub const MISS_WEIGHT: f64 = 0.5;

/// With no new outcome the prediction error halves in this time, so that a host whose bias
/// went away is balanced again (and one whose bias stays is re-tried that rarely).
pub const MISS_HALF_LIFE_S: f64 = 600.0;

/// A thing sent back to where the last move took it from within this time is predicted at the
/// demand it had there.
pub const RETURN_WINDOW_S: f64 = 60.0;

/// The predictor's own error, in points of spread: how far its moves fell short of what they
/// predicted. It holds the largest recent miss, comes down as predictions hold, and fades in
/// time.
/// Kept across restarts as `points` and `at_s` (wall-clock seconds since the Unix epoch), so
/// that it fades over the time the daemon was down too.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PredictionError {
    points: f64,
    at_s: f64,
}

impl PredictionError {
    /// The error at `now_s`.
    pub fn at(&self, now_s: f64) -> f64 {
        self.points * 0.5f64.powf(((now_s - self.at_s) / MISS_HALF_LIFE_S).max(0.0))
    }

    /// Takes an outcome: a move fell short of its prediction by `miss` points (0 or less: it
    /// held).
    pub fn observe(&mut self, miss: f64, now_s: f64) {
        let (before, miss) = (self.at(now_s), miss.max(0.0));
        self.points = if miss > before {
            miss
        } else {
            before + MISS_WEIGHT * (miss - before)
        };
        self.at_s = now_s;
    }
}

/// A thing's demand estimate and the run-queue wait in it (the policy's units).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Demand {
    pub total: f64,
    pub wait: f64,
}

impl Demand {
    /// What a move made of the change from `then` to this: the change in its wait, where
    /// the demand changed the same way; none where they went opposite ways (a guest turning
    /// busy on a pCPU where it stops waiting: its own doing).
    pub fn moved_by(self, then: Demand) -> f64 {
        let (total, wait) = (self.total - then.total, self.wait - then.wait);
        if total * wait > 0.0 {
            wait
        } else {
            0.0
        }
    }
}

/// One move: when it was made (s), each thing moved (`K`: a vCPU, a VM) with where it came from
/// and where it was sent (`P`: a pCPU, a set of pCPUs), and the demand, as it was made, of each
/// thing it touched (the moved things among them).
#[derive(Clone, Debug, PartialEq)]
pub struct Move<K, P> {
    pub at_s: f64,
    pub moved: Vec<(K, P, P)>,
    pub touched: Vec<(K, Demand)>,
}

/// Where a policy is in its cycle of moves.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Phase<K, P> {
    /// Watching the spread; the law is applied each tick.
    #[default]
    Steady,
    /// A move was made; once it is seen where it was sent, the law waits for the estimates to
    /// follow. A move not seen (a dry run, a refused or failed pin) ends the wait: nothing
    /// changed to settle.
    Settling(Move<K, P>),
}

/// What a policy shows of its host now, for judging a move.
pub trait Judge<K> {
    /// A thing's demand now (none where it is gone).
    fn demand(&self, thing: &K) -> Option<Demand>;
    /// The spread now with the demand of each thing in `held` as given (the rest as now).
    fn spread_with(&self, held: &[(&K, f64)]) -> f64;
}

/// How far `m` missed on the host `judge` shows: the spread now less the spread without what
/// the move made of the demand of the things it touched.
fn missed<K, P>(m: &Move<K, P>, judge: &impl Judge<K>) -> f64 {
    let unmoved: Vec<(&K, f64)> = m
        .touched
        .iter()
        .filter_map(|(thing, then)| {
            let now = judge.demand(thing)?;
            Some((thing, now.total - now.moved_by(*then)))
        })
        .collect();
    judge.spread_with(&[]) - judge.spread_with(&unmoved)
}

/// A policy's record of its moves and what their outcomes taught it.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcomes<K, P> {
    phase: Phase<K, P>,
    error: PredictionError,
    /// The last move made.
    last: Option<Move<K, P>>,
}

impl<K, P> Default for Outcomes<K, P> {
    fn default() -> Self {
        Self {
            phase: Phase::Steady,
            error: PredictionError::default(),
            last: None,
        }
    }
}

impl<K, P> Outcomes<K, P> {
    /// The settle phase at `now_s`: `Some(seconds left)` while the last move settles (for
    /// [`SETTLE_HALF_LIVES`] of the estimates' half-life `half_life_s`). Once it has, its
    /// outcome is taken on the host `judge` shows. `landed` says whether a thing is seen where
    /// it was sent (or is gone).
    pub fn settling(
        &mut self,
        now_s: f64,
        half_life_s: f64,
        landed: impl Fn(&K, &P) -> bool,
        judge: &impl Judge<K>,
    ) -> Option<f64> {
        let Phase::Settling(m) = &self.phase else {
            return None;
        };
        let left_s = m.at_s + SETTLE_HALF_LIVES * half_life_s - now_s;
        let seen = m.moved.iter().all(|(thing, _, to)| landed(thing, to));
        if seen && left_s > 0.0 {
            return Some(left_s);
        }
        if seen {
            // The touched things' estimates have followed their new figures but for `lag`:
            // what they added so far is that share of what they will add.
            let lag = 0.5f64.powf((now_s - m.at_s) / half_life_s);
            self.error.observe(missed(m, judge) / (1.0 - lag), now_s);
        } else {
            // Not made: nothing to judge, nothing to send back.
            self.last = None;
        }
        self.phase = Phase::Steady;
        None
    }

    /// A move is made: settle, then judge it.
    pub fn made(&mut self, m: Move<K, P>)
    where
        K: Clone,
        P: Clone,
    {
        self.last = Some(m.clone());
        self.phase = Phase::Settling(m);
    }

    /// The demand `thing` had where the last move took it from, if that is `to` and the move
    /// was made less than [`RETURN_WINDOW_S`] before `now_s`: what a move sending it back
    /// should predict for it.
    pub fn demand_back(&self, now_s: f64, thing: &K, to: &P) -> Option<f64>
    where
        K: PartialEq,
        P: PartialEq,
    {
        let last = self.last.as_ref()?;
        if now_s - last.at_s >= RETURN_WINDOW_S {
            return None;
        }
        last.moved
            .iter()
            .find(|(t, from, _)| t == thing && from == to)?;
        let (_, demand) = last.touched.iter().find(|(t, _)| t == thing)?;
        Some(demand.total)
    }

    /// The prediction error at `now_s`.
    pub fn error_at(&self, now_s: f64) -> f64 {
        self.error.at(now_s)
    }

    /// What a restart should keep: the prediction error, if there is one.
    pub fn learned(&self) -> Option<crate::params::Table> {
        (self.error.points > 0.0)
            .then(|| crate::params::Table::try_from(self.error).ok())
            .flatten()
    }

    /// Takes back the prediction error [`Self::learned`] gave before a restart.
    pub fn relearn(&mut self, learned: &crate::params::Table) -> Result<(), String> {
        let error: PredictionError = learned
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| e.message().to_owned())?;
        if !(error.points.is_finite() && error.points >= 0.0 && error.at_s.is_finite()) {
            return Err(format!(
                "a prediction error of {} points at {} s",
                error.points, error.at_s
            ));
        }
        self.error = error;
        Ok(())
    }

    /// Forgets what was learned, as if the policy had just started.
    pub fn forget(&mut self) {
        self.error = PredictionError::default();
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prediction_error_follows_outcomes_and_fades() {
        let mut e = PredictionError::default();
        e.observe(10.0, 0.0);
        assert_eq!(e.at(0.0), 10.0);
        // A smaller miss brings it halfway down; a prediction that held (or did better)
        // halves it; so does time.
        e.observe(6.0, 0.0);
        assert_eq!(e.at(0.0), 8.0);
        e.observe(-3.0, 0.0);
        assert_eq!(e.at(0.0), 4.0);
        assert!((e.at(MISS_HALF_LIFE_S) - 2.0).abs() < 1e-9);
        e.observe(12.0, MISS_HALF_LIFE_S);
        assert_eq!(e.at(MISS_HALF_LIFE_S), 12.0);
    }

    /// `a` (30, none of it waiting) and `b` (10) trade pCPUs 0 and 1; pCPU 0 also carries 20
    /// of host work: 20 + 30 against 10 before (a spread of 20), 20 + 10 against 30 after (0
    /// predicted).
    fn a_move(at_s: f64) -> Move<&'static str, u32> {
        let demand = |total| Demand { total, wait: 0.0 };
        Move {
            at_s,
            moved: vec![("a", 0, 1), ("b", 1, 0)],
            touched: vec![
                ("a", demand(30.0)),
                ("b", demand(10.0)),
                ("host", demand(20.0)),
            ],
        }
    }

    /// A host after [`a_move`]: `a`'s, `b`'s and the host work's (run, wait) estimates.
    #[derive(Clone, Copy)]
    struct After {
        a: (f64, f64),
        b: (f64, f64),
        host: (f64, f64),
    }

    impl After {
        fn new(a: (f64, f64), b: (f64, f64), host: f64) -> Self {
            let host = (host, 0.0);
            Self { a, b, host }
        }

        /// Judges `o`'s settling move on this host at `now_s` (half-life 1 s).
        fn settle(self, o: &mut Outcomes<&'static str, u32>, now_s: f64) -> Option<f64> {
            o.settling(now_s, 1.0, |_, _| true, &self)
        }
    }

    impl Judge<&'static str> for After {
        fn demand(&self, thing: &&'static str) -> Option<Demand> {
            let (run, wait) = match *thing {
                "a" => self.a,
                "b" => self.b,
                _ => self.host,
            };
            Some(Demand {
                total: run + wait,
                wait,
            })
        }

        fn spread_with(&self, held: &[(&&'static str, f64)]) -> f64 {
            let d = |k: &'static str| {
                held.iter()
                    .find(|(t, _)| **t == k)
                    .map_or_else(|| self.demand(&k).unwrap().total, |(_, d)| *d)
            };
            (d("host") + d("b") - d("a")).abs() / 2.0
        }
    }

    #[test]
    fn a_move_settles_once_seen_and_its_miss_is_what_the_move_made_of_the_moved_demand() {
        let mut o = Outcomes::default();
        o.made(a_move(0.0));
        let as_moved = After::new((30.0, 0.0), (10.0, 0.0), 20.0);
        assert_eq!(as_moved.settle(&mut o, 1.0), Some(1.0));
        // Settled: `a` waits 20 where it went (behind something there); two half-lives on,
        // its estimate is three quarters of the way there (15). The spread the 20 points add
        // (10 against 0) is the miss.
        assert_eq!(
            After::new((30.0, 15.0), (10.0, 0.0), 20.0).settle(&mut o, 2.0),
            None
        );
        assert_eq!(o.error_at(2.0), 10.0);
        let later = After::new((30.0, 60.0), (10.0, 0.0), 20.0);
        assert_eq!(later.settle(&mut o, 3.0), None, "judged once");
        assert_eq!(
            o.error_at(3.0),
            10.0f64 * 0.5f64.powf(1.0 / MISS_HALF_LIFE_S)
        );
        // One that held brings it down.
        o.made(a_move(10.0));
        assert_eq!(as_moved.settle(&mut o, 12.0), None);
        let halved = 0.5 * 10.0 * 0.5f64.powf(10.0 / MISS_HALF_LIFE_S);
        assert!((o.error_at(12.0) - halved).abs() < 1e-9);
    }

    #[test]
    fn what_the_guests_and_the_rest_of_the_host_did_meanwhile_is_no_miss() {
        let settled = |after: After| {
            let mut o = Outcomes::default();
            o.made(a_move(0.0));
            assert_eq!(after.settle(&mut o, 2.0), None);
            o.error_at(2.0)
        };
        // The host work grew from 20 to 60 (a backup, a boot) while `a` and `b` kept their
        // demand: the spread is 20 again, and the move's prediction held.
        assert_eq!(settled(After::new((30.0, 0.0), (10.0, 0.0), 60.0)), 0.0);
        // `a`'s guest turned busier (it runs 60, waiting no more than before): its doing; so
        // is one that turned busier and stopped waiting where it went.
        assert_eq!(settled(After::new((60.0, 0.0), (10.0, 0.0), 20.0)), 0.0);
        // `b`'s guest went idle (a boot ended).
        assert_eq!(settled(After::new((30.0, 0.0), (2.0, 0.0), 20.0)), 0.0);
        // But `a` turning busier by 40 while it waits 10 more: 10 of it is the move's (a miss
        // of 5 points of spread seen, 20/3 by the time its estimate is there).
        let e = settled(After::new((60.0, 10.0), (10.0, 0.0), 20.0));
        assert!((e - 20.0 / 3.0).abs() < 1e-9, "{e}");
    }

    #[test]
    fn what_those_beside_the_moved_things_take_on_is_a_miss_too() {
        // `b` runs 10 on pCPU 0 as predicted, but the host work there now waits behind it, 20
        // more (15 of it in its estimate by now): the host work's 20 points are the miss's.
        let mut o = Outcomes::default();
        o.made(a_move(0.0));
        let after = After {
            a: (30.0, 0.0),
            b: (10.0, 0.0),
            host: (20.0, 15.0),
        };
        assert_eq!(after.settle(&mut o, 2.0), None);
        assert_eq!(o.error_at(2.0), 10.0);
    }

    #[test]
    fn the_move_made_the_change_in_the_wait_where_the_demand_went_the_same_way() {
        let d = |total, wait| Demand { total, wait };
        let then = d(30.0, 5.0);
        assert_eq!(d(50.0, 25.0).moved_by(then), 20.0, "all of it waiting");
        assert_eq!(
            d(70.0, 15.0).moved_by(then),
            10.0,
            "busier, and waiting more"
        );
        assert_eq!(d(20.0, 0.0).moved_by(then), -5.0, "idler, and waiting less");
        assert_eq!(
            d(29.0, 0.0).moved_by(then),
            -5.0,
            "its wait, not the run's noise"
        );
        assert_eq!(
            d(90.0, 0.0).moved_by(then),
            0.0,
            "busier where it stopped waiting"
        );
        assert_eq!(d(10.0, 5.0).moved_by(then), 0.0, "idler, waiting as much");
    }

    #[test]
    fn a_move_never_seen_is_not_judged() {
        let mut o = Outcomes::default();
        o.made(a_move(0.0));
        let waits = After::new((30.0, 60.0), (10.0, 0.0), 20.0);
        assert_eq!(o.settling(0.5, 1.0, |_, _| false, &waits), None);
        assert_eq!(o.error_at(0.5), 0.0);
    }

    #[test]
    fn a_thing_sent_back_soon_is_predicted_at_the_demand_it_had_there() {
        let mut o = Outcomes::default();
        o.made(a_move(0.0));
        After::new((30.0, 0.0), (10.0, 0.0), 20.0).settle(&mut o, 2.0);
        assert_eq!(o.demand_back(5.0, &"a", &0), Some(30.0));
        assert_eq!(o.demand_back(5.0, &"b", &1), Some(10.0));
        assert_eq!(o.demand_back(5.0, &"a", &2), None, "not where it came from");
        assert_eq!(o.demand_back(5.0, &"host", &0), None, "not moved");
        assert_eq!(o.demand_back(RETURN_WINDOW_S, &"a", &0), None, "too late");
        // A move never seen is nothing to send back.
        let mut o = Outcomes::default();
        o.made(a_move(0.0));
        let unseen = After::new((30.0, 0.0), (10.0, 0.0), 20.0);
        o.settling(0.5, 1.0, |_, _| false, &unseen);
        assert_eq!(o.demand_back(1.0, &"a", &0), None);
    }

    #[test]
    fn the_prediction_error_is_kept_across_a_restart_and_fades_over_it() {
        let mut o = Outcomes::default();
        assert_eq!(o.learned(), None, "nothing learned yet");
        o.made(a_move(0.0));
        After::new((30.0, 15.0), (10.0, 0.0), 20.0).settle(&mut o, 2.0);
        let table = o.learned().unwrap();
        let mut next: Outcomes<&str, u32> = Outcomes::default();
        next.relearn(&table).unwrap();
        assert_eq!(next.error_at(2.0), 10.0);
        assert_eq!(next.error_at(2.0 + MISS_HALF_LIFE_S), 5.0);
        // A table it cannot read leaves it as new.
        let mut bad = table.clone();
        bad.insert("points".into(), toml::Value::Float(f64::NAN));
        let mut other: Outcomes<&str, u32> = Outcomes::default();
        assert!(other.relearn(&bad).is_err());
        bad.insert("points".into(), toml::Value::String("ten".into()));
        assert!(other.relearn(&bad).is_err());
        assert_eq!(other.error_at(2.0), 0.0);
    }
}
