//! Small statistics shared by policies and tools.

/// Mean of a list of values (0 for an empty list).
pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// Population standard deviation of a list of values (0 for an empty list).
pub fn stdev(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let m = mean(values);
    (values.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / values.len() as f64).sqrt()
}

/// A demand's noise before it has been measured, percent points: about the standard deviation
/// of one second's readings of a steady guest on a busy host (4.7 for the 70% guests of the
/// real-guest recording in vcoord's tests).
pub const PRIOR_NOISE_PCT: f64 = 5.0;

/// A demand not measured for this long is forgotten, s.
pub const FORGET_S: f64 = 30.0;

/// A demand tracked over time: an exponentially weighted mean and variance with one half-life,
/// whatever the tick. The variance is the reading's measured noise; a reading that moves the
/// mean by x raises it to at least x, so one reading is never significant on its own.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// Weighted mean of the readings (percent of one pCPU, for CPU demand).
    pub mean: f64,
    /// Weighted variance of the readings around it: a reading's noise, squared.
    pub var: f64,
    /// Sum of the squared weights of the readings in `mean`: its variance is `var` times this
    /// (1 for one reading; w / (2 - w) after many of weight w).
    pub weight_sq: f64,
    /// When it was last measured, s.
    pub at_s: f64,
}

impl Estimate {
    /// The estimate of one reading, with [`PRIOR_NOISE_PCT`] of noise.
    pub fn first(reading: f64, at_s: f64) -> Self {
        Self {
            mean: reading,
            var: PRIOR_NOISE_PCT * PRIOR_NOISE_PCT,
            weight_sq: 1.0,
            at_s,
        }
    }

    /// Nothing, known exactly (what was never measured counts as 0).
    pub fn none(at_s: f64) -> Self {
        Self {
            mean: 0.0,
            var: 0.0,
            weight_sq: 1.0,
            at_s,
        }
    }

    /// Folds in a reading that weighs `w` (the incremental weighted mean and variance).
    pub fn update(&mut self, reading: f64, w: f64, at_s: f64) {
        let diff = reading - self.mean;
        self.mean += w * diff;
        self.var = (1.0 - w) * (self.var + w * diff * diff);
        self.weight_sq = (1.0 - w).powi(2) * self.weight_sq + w * w;
        self.at_s = at_s;
    }

    /// The estimate at `now_s` after this tick's reading, if any: a reading weighs what the
    /// time it covers weighs (at least `interval_s`); with none, the last estimate stands until
    /// it is too old to trust ([`FORGET_S`]).
    pub fn fold(
        before: Option<Estimate>,
        reading: Option<f64>,
        now_s: f64,
        interval_s: f64,
        half_life_s: f64,
    ) -> Option<Estimate> {
        match (reading, before) {
            (Some(x), Some(mut e)) => {
                let dt = (now_s - e.at_s).max(interval_s);
                e.update(x, 1.0 - 0.5f64.powf(dt / half_life_s), now_s);
                Some(e)
            }
            (Some(x), None) => Some(Estimate::first(x, now_s)),
            (None, Some(e)) if now_s - e.at_s < FORGET_S => Some(e),
            (None, _) => None,
        }
    }

    /// The standard deviation of the mean: how far it may be from the demand behind it.
    pub fn noise(&self) -> f64 {
        (self.var * self.weight_sq).sqrt()
    }

    /// The lower bound of the mean at `sigmas` standard deviations, not below 0: as far as the
    /// demand is significant.
    pub fn significant(&self, sigmas: f64) -> f64 {
        (self.mean - sigmas * self.noise()).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdev_is_population() {
        assert!((stdev(&[100.0, 0.0]) - 50.0).abs() < 1e-12);
        assert_eq!(stdev(&[]), 0.0);
        assert!((mean(&[1.0, 2.0, 3.0]) - 2.0).abs() < 1e-12);
    }
}
