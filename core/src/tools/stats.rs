//! The statistics of `vcoord compare --seeds N`: a mean with its 95% confidence interval
//! (Student's t), and a verdict on two contenders run under the same seeds (a paired t-test
//! on the per-seed differences, two-sided, at the 5% level).

use serde::Serialize;

/// Two-sided 95% critical values of Student's t for 1 to 30 degrees of freedom.
const T95: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// The two-sided 95% critical value of Student's t with `df` degrees of freedom (`df` >= 1).
/// Past 30, 1.96 + 2.4 / df, within 0.002 of the exact value.
pub fn t95(df: usize) -> f64 {
    match df {
        0 => f64::INFINITY,
        1..=30 => T95[df - 1],
        _ => 1.96 + 2.4 / df as f64,
    }
}

/// A figure measured under several seeds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Estimate {
    /// Mean over the seeds.
    pub mean: f64,
    /// Half width of the 95% confidence interval of the mean; `None` with one seed.
    pub ci95: Option<f64>,
    /// Number of seeds.
    pub n: usize,
}

impl Estimate {
    /// The mean and its interval; `None` for no values.
    pub fn of(values: &[f64]) -> Option<Self> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let ci95 = (n > 1).then(|| t95(n - 1) * stdev(values, mean) / (n as f64).sqrt());
        Some(Self { mean, ci95, n })
    }

    /// `12.3 ±0.4` (or `12.3` with one seed), with `decimals` places.
    pub fn show(&self, decimals: usize) -> String {
        match self.ci95 {
            Some(h) => format!("{:.decimals$} ±{h:.decimals$}", self.mean),
            None => format!("{:.decimals$}", self.mean),
        }
    }
}

/// Sample standard deviation around `mean` (n - 1 in the denominator).
fn stdev(values: &[f64], mean: f64) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let ss: f64 = values.iter().map(|v| (v - mean).powi(2)).sum();
    (ss / (values.len() - 1) as f64).sqrt()
}

/// How one contender did against another on one figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Significantly better.
    Better,
    /// Significantly worse.
    Worse,
    /// No significant difference.
    Same,
}

impl Verdict {
    /// The verdict seen from the other side.
    pub fn flip(self) -> Self {
        match self {
            Verdict::Better => Verdict::Worse,
            Verdict::Worse => Verdict::Better,
            Verdict::Same => Verdict::Same,
        }
    }
}

/// Compares `a` with `b`, measured under the same seeds in the same order: a paired t-test on
/// the differences, two-sided, 5% level. Differences that are all equal and not zero are
/// significant (a deterministic gap); with one seed any difference counts (no test possible:
/// callers say so). `lower_is_better` orients the verdict.
pub fn paired(a: &[f64], b: &[f64], lower_is_better: bool) -> Verdict {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let n = d.len();
    if n == 0 {
        return Verdict::Same;
    }
    let mean = d.iter().sum::<f64>() / n as f64;
    // Differences below this are rounding, not a difference.
    const EPS: f64 = 1e-9;
    let sd = stdev(&d, mean);
    let significant = if mean.abs() <= EPS {
        false
    } else if n == 1 || sd <= EPS {
        true
    } else {
        (mean / (sd / (n as f64).sqrt())).abs() > t95(n - 1)
    };
    match (significant, (mean < 0.0) == lower_is_better) {
        (false, _) => Verdict::Same,
        (true, true) => Verdict::Better,
        (true, false) => Verdict::Worse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confidence_interval_of_a_known_sample() {
        // mean 5, sample sd 2.138 (n = 8): half width 2.365 * 2.138 / sqrt(8) = 1.788
        let e = Estimate::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!(e.mean, 5.0);
        assert!((e.ci95.unwrap() - 1.788).abs() < 0.001, "{e:?}");
        assert_eq!(Estimate::of(&[3.0]).unwrap().ci95, None);
        assert_eq!(Estimate::of(&[]), None);
        assert_eq!(e.show(1), "5.0 ±1.8");
    }

    #[test]
    fn t_values_past_the_table_are_close() {
        // exact: 40 -> 2.021, 60 -> 2.000, 120 -> 1.980
        for (df, t) in [(40, 2.021), (60, 2.000), (120, 1.980)] {
            assert!((t95(df) - t).abs() < 0.002, "{df}");
        }
    }

    #[test]
    fn paired_test_tells_a_gap_from_noise() {
        let a = [10.0, 12.0, 11.0, 13.0, 10.5];
        // the same plus a steady 3: significant, whatever the spread between seeds
        let b: Vec<f64> = a.iter().map(|x| x + 3.0).collect();
        assert_eq!(paired(&a, &b, true), Verdict::Better);
        assert_eq!(paired(&a, &b, false), Verdict::Worse);
        assert_eq!(paired(&b, &a, true), Verdict::Worse);
        // differences of both signs around zero: no significant difference
        let c = [11.0, 11.0, 10.0, 14.0, 10.0];
        assert_eq!(paired(&a, &c, true), Verdict::Same);
        assert_eq!(paired(&a, &a, true), Verdict::Same);
        // one seed: any difference counts
        assert_eq!(paired(&[1.0], &[2.0], true), Verdict::Better);
        assert_eq!(Verdict::Better.flip(), Verdict::Worse);
    }
}
