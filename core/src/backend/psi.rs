//! The host's pressure stall information (Linux PSI): `/proc/pressure/{cpu,memory,io}`, read
//! in microseconds on the local host. A file that is not there (an older kernel, PSI switched
//! off) is no signal, never zero.

use std::path::Path;

use crate::model::{PressureSample, PsiSample};

/// Reads the three files under `dir` (normally `/proc/pressure`).
pub fn read(dir: &Path) -> PressureSample {
    let one = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .ok()
            .and_then(|text| parse(&text))
    };
    PressureSample {
        cpu: one("cpu"),
        memory: one("memory"),
        io: one("io"),
    }
}

/// Parses one pressure file: a `some` line (required) and a `full` line (optional), each
/// `avg10=.. avg60=.. avg300=.. total=..`.
pub fn parse(text: &str) -> Option<PsiSample> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let kind = words.next();
        let mut avg10 = None;
        let mut total = None;
        for word in words {
            match word.split_once('=') {
                Some(("avg10", v)) => avg10 = v.parse::<f64>().ok(),
                Some(("total", v)) => total = v.parse::<u64>().ok(),
                _ => {}
            }
        }
        match kind {
            Some("some") => some = Some((avg10?, total?)),
            Some("full") => full = total,
            _ => {}
        }
    }
    let (some_avg10_pct, some_total_us) = some?;
    Some(PsiSample {
        some_total_us,
        full_total_us: full,
        some_avg10_pct,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_lines_some_only_and_garbage() {
        let text = "some avg10=1.50 avg60=0.20 avg300=0.05 total=123456\n\
                    full avg10=0.50 avg60=0.00 avg300=0.00 total=4567\n";
        assert_eq!(
            parse(text),
            Some(PsiSample {
                some_total_us: 123_456,
                full_total_us: Some(4567),
                some_avg10_pct: 1.5
            })
        );
        // Kernels before 5.13 give no `full` line for cpu.
        let cpu = parse("some avg10=0.00 avg60=0.00 avg300=0.00 total=9\n").unwrap();
        assert_eq!((cpu.some_total_us, cpu.full_total_us), (9, None));
        assert_eq!(parse(""), None);
        assert_eq!(parse("some avg10=x total=1\n"), None);
        assert_eq!(parse("full avg10=0.00 total=1\n"), None);
    }

    #[test]
    fn a_missing_directory_is_no_signal() {
        let p = read(Path::new("/nonexistent-pressure-dir"));
        assert_eq!(p, PressureSample::default());
    }

    #[test]
    fn this_hosts_files_parse_where_they_exist() {
        let dir = Path::new("/proc/pressure");
        let p = read(dir);
        for (name, got) in [("cpu", p.cpu), ("memory", p.memory), ("io", p.io)] {
            assert_eq!(dir.join(name).exists(), got.is_some(), "{name}");
        }
    }
}
