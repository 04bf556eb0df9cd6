//! `vcoord scenario`: a simulator scenario from a recording (`vcoord_core::tools::derive`) or
//! from a public VM trace (`vcoord_core::tools::trace`).

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

/// `vcoord scenario from-trace`: folders expand to their `*.csv` files in numeric order; the
/// scenario is read back as the simulator would before it is written.
pub fn scenario_from_trace(args: &crate::cli::FromTraceArgs) -> Result<()> {
    use vcoord_core::tools::trace::{scenario_from_trace, TraceFormat, TraceOptions};
    let files = trace_files(&args.traces)?;
    let name = args.name.clone().unwrap_or_else(|| {
        args.output
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "trace".into())
    });
    let options = TraceOptions {
        format: match args.format {
            crate::cli::TraceFormatArg::Gwa => TraceFormat::Gwa,
            crate::cli::TraceFormatArg::Azure => TraceFormat::Azure,
            crate::cli::TraceFormatArg::Csv => TraceFormat::Csv,
        },
        name,
        vms: args.vms.map(|n| n as usize),
        skip: args.skip as usize,
        length_s: args.hours.map(|h| h * 3600.0),
        time_scale: args.time_scale,
        pcpus: args.pcpus,
        cpu_overcommit: args.cpu_overcommit,
        memory_mib: args.memory_mib,
        memory_overcommit: args.memory_overcommit,
        host_used_mib: args.host_used_mib,
        swap_mib: args.swap_mib,
        seed: args.seed,
        azure_vcpus: args.azure_vcpus,
        azure_memory_mib: args.azure_memory_mib,
        burst: args.burst,
    };
    if let Some(h) = args.hours {
        if !(h.is_finite() && h > 0.0) {
            bail!("--hours {h}: must be a positive number of hours");
        }
    }
    let text = scenario_from_trace(&files, &options)?;
    vcoord_core::backend::sim::Scenario::parse(&text, &args.output)
        .map_err(|e| anyhow::anyhow!("the scenario made from the trace is not valid: {e}"))?;
    std::fs::write(&args.output, &text)
        .with_context(|| format!("writing {}", args.output.display()))?;
    eprintln!(
        "wrote {} ({} trace files)",
        args.output.display(),
        files.len()
    );
    Ok(())
}

/// Trace files: files as given, folders expanded to their `*.csv` files in numeric order (1, 2,
/// ..., 10; by name where the stems are not numbers).
pub fn trace_files(paths: &[std::path::PathBuf]) -> Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<std::path::PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("reading {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "csv"))
                .collect();
            found.sort_by_key(|p| {
                let stem = p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (stem.parse::<u64>().unwrap_or(u64::MAX), stem)
            });
            if found.is_empty() {
                bail!("{}: no *.csv trace files", path.display());
            }
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}
