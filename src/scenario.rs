//! `vcoord scenario`: a simulator scenario from a recording (`vcoord_core::tools::derive`).

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::replay::of_host;

/// `vcoord scenario from-record`: the scenario is checked by reading it back as the simulator
/// would before it is written.
pub fn scenario_from_record(
    trace: &Path,
    output: &Path,
    host: Option<&str>,
    name: Option<&str>,
) -> Result<()> {
    let same_file = |a: &Path, b: &Path| {
        use std::os::unix::fs::MetadataExt as _;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
            _ => false,
        }
    };
    if same_file(trace, output) {
        bail!(
            "{}: is the recording itself: writing the scenario there would overwrite it (choose another -o)",
            output.display()
        );
    }
    let records = vcoord_core::runtime::record::read_trace(trace)?;
    let records = match host {
        Some(h) => {
            let records = of_host(records, h, trace)?;
            if let Some(other) = records.iter().find(|r| r.host != h) {
                bail!(
                    "{}: holds host `{}`, not `{h}`",
                    trace.display(),
                    vcoord_core::show::shown(&other.host)
                );
            }
            records
        }
        None => {
            let first = records.first().map(|r| r.host.clone()).unwrap_or_default();
            if records.iter().any(|r| r.host != first) {
                bail!(
                    "{}: holds several hosts: pick one with --host",
                    trace.display()
                );
            }
            records
        }
    };
    let name = name.map(str::to_owned).unwrap_or_else(|| {
        output
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "recorded".into())
    });
    let text = vcoord_core::tools::derive::scenario_from_records(
        &records,
        &name,
        &trace.display().to_string(),
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", trace.display()))?;
    vcoord_core::backend::sim::Scenario::parse(&text, output)
        .map_err(|e| anyhow::anyhow!("the derived scenario is not valid (a bug): {e}"))?;
    std::fs::write(output, &text).with_context(|| format!("writing {}", output.display()))?;
    eprintln!(
        "wrote {} ({} ticks of host {})",
        output.display(),
        records.len(),
        records.first().map_or("", |r| r.host.as_str())
    );
    Ok(())
}
