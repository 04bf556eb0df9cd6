//! Judging a policy's moves by their outcomes, for the CPU policies that balance a spread: the
//! settle phase after a move, and the predictor's own error entering the bar the next move must
//! clear.
//!
//! A policy that moves things (vCPUs, VMs) predicts the spread it will reach. Once the move is
//! seen where it was sent and has settled for [`SETTLE_HALF_LIVES`] half-lives of the policy's
//! estimates, the spread reached is set against the one predicted, allowing for the estimates'
//! lag; how far it fell short is a miss. Sending things back within [`UNDO_WINDOW_S`] of a move,
//! on a host no more uneven than then by more than the move was to gain, shows its gain (their
//! share of it) was not there: a miss by that much, which the undoing itself must then beat.
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

/// Things sent back to where a move took them from within this time undo it.
pub const UNDO_WINDOW_S: f64 = 60.0;

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

/// One move: each thing moved (`K`: a vCPU, a VM) with where it came from and where it was sent
/// (`P`: a pCPU, a set of pCPUs), when, the spread then and the one predicted.
#[derive(Clone, Debug, PartialEq)]
pub struct Move<K, P> {
    /// When it was made, s.
    pub at_s: f64,
    /// (thing, from, to) of each thing moved.
    pub moved: Vec<(K, P, P)>,
    /// The spread it was made at.
    pub spread: f64,
    /// The spread it predicted.
    pub predicted: f64,
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

/// A policy's record of its moves and what their outcomes taught it.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcomes<K, P> {
    phase: Phase<K, P>,
    error: PredictionError,
    /// The last move made, while undoing it would count.
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

impl<K: PartialEq + Clone, P: PartialEq + Clone> Outcomes<K, P> {
    /// The settle phase at `now_s`: `Some(seconds left)` while the last move settles. Once it
    /// has, its outcome is taken: `spread` (the spread now) against the one predicted, the
    /// estimates (of half-life `half_life_s`) still lagging toward the spread before. `landed`
    /// says whether a thing is seen where it was sent (or is gone).
    pub fn settling(
        &mut self,
        now_s: f64,
        half_life_s: f64,
        spread: f64,
        landed: impl Fn(&K, &P) -> bool,
    ) -> Option<f64> {
        let Phase::Settling(m) = &self.phase else {
            return None;
        };
        let left_s = m.at_s + SETTLE_HALF_LIVES * half_life_s - now_s;
        let seen = m.moved.iter().all(|(k, _, to)| landed(k, to));
        if seen && left_s > 0.0 {
            return Some(left_s);
        }
        if seen {
            let lag = 0.5f64.powf((now_s - m.at_s) / half_life_s);
            let expected = m.predicted + lag * (m.spread - m.predicted);
            self.error.observe(spread - expected, now_s);
        } else {
            // Not made: nothing to judge or undo.
            self.last = None;
        }
        self.phase = Phase::Steady;
        None
    }

    /// The prediction error a move of `moved` at `now_s` must beat, beyond `bar` (what it must
    /// beat otherwise), from `spread` with a predicted `gain`. Where the move sends things back
    /// where the last move took them from, that move's gain (their share of it) was a miss,
    /// counted if the move would clear the bar without it: the undoing must then beat it too.
    pub fn error_for(
        &mut self,
        now_s: f64,
        spread: f64,
        gain: f64,
        bar: f64,
        moved: &[(K, P, P)],
    ) -> f64 {
        let error = self.error.at(now_s);
        let recent = |l: &Move<K, P>| {
            now_s - l.at_s < UNDO_WINDOW_S && spread <= l.spread + (l.spread - l.predicted)
        };
        let Some(last) = self.last.take().filter(recent) else {
            return error;
        };
        let back = moved
            .iter()
            .filter(|(k, _, to)| last.moved.iter().any(|(lk, from, _)| lk == k && from == to))
            .count();
        if back > 0 && gain > bar + error {
            let share = back as f64 / last.moved.len() as f64;
            self.error
                .observe((last.spread - last.predicted) * share, now_s);
            return self.error.at(now_s);
        }
        self.last = Some(last);
        error
    }

    /// A move is made: settle, then judge it.
    pub fn made(&mut self, m: Move<K, P>) {
        self.last = Some(m.clone());
        self.phase = Phase::Settling(m);
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

    fn a_move(at_s: f64) -> Move<&'static str, u32> {
        Move {
            at_s,
            moved: vec![("a", 0, 1), ("b", 1, 0)],
            spread: 20.0,
            predicted: 4.0,
        }
    }

    #[test]
    fn a_move_settles_once_seen_and_its_miss_is_what_the_lag_does_not_explain() {
        let mut o = Outcomes::default();
        o.made(a_move(0.0));
        let seen = |_: &&str, _: &u32| true;
        assert_eq!(o.settling(1.0, 1.0, 30.0, seen), Some(1.0));
        // Two half-lives on, a quarter of the way back to 20 is still expected: 8.
        assert_eq!(o.settling(2.0, 1.0, 18.0, seen), None);
        assert_eq!(o.error_at(2.0), 10.0);
        assert_eq!(o.settling(3.0, 1.0, 40.0, seen), None, "judged once");
        assert!(o.error_at(3.0) <= 10.0);
        // One that held brings it down.
        o.made(a_move(10.0));
        assert_eq!(o.settling(12.0, 1.0, 8.0, seen), None);
        let halved = 0.5 * 10.0 * 0.5f64.powf(10.0 / MISS_HALF_LIFE_S);
        assert!((o.error_at(12.0) - halved).abs() < 1e-9);
    }

    #[test]
    fn a_move_never_seen_is_not_judged_and_cannot_be_undone() {
        let mut o = Outcomes::default();
        o.made(a_move(0.0));
        assert_eq!(o.settling(0.5, 1.0, 20.0, |_, _| false), None);
        assert_eq!(o.error_at(0.5), 0.0);
        let back = [("a", 1, 0)];
        assert_eq!(o.error_for(1.0, 20.0, 16.0, 3.0, &back), 0.0);
    }

    #[test]
    fn the_prediction_error_is_kept_across_a_restart_and_fades_over_it() {
        let seen = |_: &&str, _: &u32| true;
        let mut o = Outcomes::default();
        assert_eq!(o.learned(), None, "nothing learned yet");
        o.made(a_move(0.0));
        o.settling(2.0, 1.0, 18.0, seen);
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

    #[test]
    fn sending_back_counts_the_share_of_the_gain_that_was_not_there() {
        let seen = |_: &&str, _: &u32| true;
        let mut o = Outcomes::default();
        o.made(a_move(0.0));
        // Settled and judged as held (4 reached, the lag's 4 expected).
        assert_eq!(o.settling(2.0, 1.0, 8.0, seen), None);
        assert_eq!(o.error_at(2.0), 0.0);
        // Sending `a` back: half of the move's 16 points were not there.
        let back = [("a", 1, 0)];
        assert_eq!(o.error_for(5.0, 20.0, 16.0, 3.0, &back), 8.0);
        // Counted once.
        assert!(o.error_for(6.0, 20.0, 16.0, 3.0, &back) <= 8.0);
        // A move that could not clear the bar anyway, or one after the load changed (the spread
        // grew by more than the move was to gain), is no undoing.
        let fresh = || {
            let mut o = Outcomes::default();
            o.made(a_move(0.0));
            o.settling(2.0, 1.0, 8.0, seen);
            o
        };
        assert_eq!(fresh().error_for(5.0, 20.0, 2.0, 3.0, &back), 0.0);
        assert_eq!(fresh().error_for(5.0, 40.0, 30.0, 3.0, &back), 0.0);
        assert_eq!(
            fresh().error_for(UNDO_WINDOW_S, 20.0, 16.0, 3.0, &back),
            0.0
        );
    }
}
