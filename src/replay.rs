//! `vcoord replay`: a recording through a configuration's policies
//! (`vcoord_core::tools::replay`).

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Result};
use vcoord_core::config::{Config, HostConfig};
use vcoord_core::runtime::record::TickRecord;

use crate::cli::{ReplayArgs, ReplayFormat};

pub fn replay(args: ReplayArgs) -> Result<()> {
    let records = vcoord_core::runtime::record::read_trace(&args.trace)?;
    let config = Config::from_file(&args.config)?;
    let host = pick_host(&config, &records, args.host.as_deref(), &args.config)?;
    let records = of_host(records, &host.name, &args.trace)?;
    let ticks = vcoord_core::tools::replay::replay(&records, host)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.trace.display()))?;
    let out = match args.format {
        ReplayFormat::Json => serde_json::to_string_pretty(&ticks)? + "\n",
        ReplayFormat::Table => {
            vcoord_core::tools::replay::report(&ticks, host, &args.trace.display().to_string())
        }
    };
    std::io::stdout().write_all(out.as_bytes())?;
    Ok(())
}

/// The records of host `name`: a recording of several hosts holds each host's ticks, and a host's
/// policies see only its own. A recording of one host replays through any host's policies.
pub fn of_host(records: Vec<TickRecord>, name: &str, trace: &Path) -> Result<Vec<TickRecord>> {
    let mut hosts: Vec<&str> = records.iter().map(|r| r.host.as_str()).collect();
    hosts.sort_unstable();
    hosts.dedup();
    if hosts.len() <= 1 {
        return Ok(records);
    }
    if !hosts.contains(&name) {
        bail!(
            "{}: holds the hosts {}, not `{name}`: pick one with --host",
            trace.display(),
            hosts.join(", ")
        );
    }
    Ok(records.into_iter().filter(|r| r.host == name).collect())
}

/// The host whose policies replay the recording: `--host`, else the one named like the
/// recording's host, else the configuration's only host.
fn pick_host<'a>(
    config: &'a Config,
    records: &[TickRecord],
    name: Option<&str>,
    path: &Path,
) -> Result<&'a HostConfig> {
    let wanted = name.or(records.first().map(|r| r.host.as_str()));
    if let Some(h) = wanted.and_then(|n| config.hosts.iter().find(|h| h.name == n)) {
        return Ok(h);
    }
    if let Some(n) = name {
        bail!("{}: no host named `{n}`", path.display());
    }
    match config.hosts.as_slice() {
        [only] => Ok(only),
        _ => bail!(
            "{}: several hosts and none named like the recording's; pick one with --host",
            path.display()
        ),
    }
}
