//! The command line (clap derive): one struct per command, help per command, shell completions
//! and the manual page generated from the same definitions. `-c` always means `--config`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Host-level vCPU and memory coordinator for libvirt/QEMU hosts.
///
/// Every tick, vcoord samples the vCPUs and memory of all VMs of a host, lets a CPU policy
/// pin vCPUs and a memory policy size balloons, checks the plan against safety guards and
/// applies it through libvirt. Policies are built in or loaded from plugins; the embedded
/// simulator (`sim:` hosts) runs reproducible scenarios.
#[derive(Debug, Parser)]
#[command(
    name = "vcoord",
    version,
    propagate_version = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// vcoord's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Coordinate the configured hosts (the daemon).
    Run(RunArgs),
    /// Run policy choices on simulator scenarios and compare them.
    Compare(CompareArgs),
    /// Feed a recording's snapshots to a configuration's policies (open loop).
    Replay(ReplayArgs),
    /// Measure collection cost, decision time and long-run footprint.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Make simulator scenarios (from a live recording: A/B on a host's own workload).
    #[command(subcommand)]
    Scenario(ScenarioCommand),
    /// One-shot table of the VMs of a host (or of a running daemon): vCPU load, pinning, memory.
    Status(StatusArgs),
    /// List the built-in policies with their parameters (and what a configuration uses).
    Policies {
        /// Also list the hosts of FILE and the plugins it names, with their parameters.
        #[arg(short = 'c', long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file: syntax, keys, policies, plugins and their parameters.
    CheckConfig {
        /// The configuration file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff).
    Man,
}

/// `vcoord run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Configuration file.
    #[arg(short = 'c', long, value_name = "FILE", default_value = vcoord_core::config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Run only this host of the configuration.
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// Stop after N ticks, at least 1 (a simulated host stops at its scenario's end).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub ticks: Option<u64>,
    /// Decide and log, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write one JSON line per tick (with the snapshot, for `vcoord replay`).
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Rotate the record past this size (FILE -> FILE.1 -> ...).
    #[arg(long, value_name = "MIB", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub record_max_mib: u64,
    /// Older record files kept when rotating.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub record_keep: u32,
    /// Run simulated hosts in real time.
    #[arg(long)]
    pub realtime: bool,
    /// Log level (error, warn, info, debug, trace) or filter directives such as
    /// `info,vcoord_core::plugin=debug` (default: $RUST_LOG, else $VCOORD_LOG, else the
    /// configuration's `log_level`, else info).
    #[arg(long, value_name = "FILTER", value_parser = parse_filter)]
    pub log_level: Option<String>,
    /// Log format: `text` (colored on a terminal only; NO_COLOR honoured) or `json` (one object
    /// per line, for log shippers).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line.
    Json,
}

/// How `compare` prints its results.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned tables per scenario.
    Table,
    /// A JSON array of rows.
    Json,
    /// Comma-separated rows with a header.
    Csv,
}

/// How `replay` prints its results.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReplayFormat {
    /// A readable report.
    Table,
    /// JSON.
    Json,
}

/// `vcoord compare`.
#[derive(Debug, Args)]
#[command(
    after_help = "Each --config FILE is one contender (the policies and guard of each of its hosts); \
otherwise every --cpu choice is paired with every --memory choice. POLICY is a built-in name or \
a plugin file (a path with `/` or ending in .so)."
)]
pub struct CompareArgs {
    /// Scenario files, or folders of them.
    #[arg(value_name = "SCENARIO", required = true)]
    pub scenarios: Vec<PathBuf>,
    /// A contender: the policies of each host of FILE (give two or more, or one with two hosts).
    #[arg(short = 'c', long = "config", value_name = "FILE", conflicts_with_all = ["cpu", "memory"])]
    pub configs: Vec<PathBuf>,
    /// A CPU policy to compare (repeat).
    #[arg(long, value_name = "POLICY")]
    pub cpu: Vec<String>,
    /// A memory policy to compare (repeat).
    #[arg(long, value_name = "POLICY")]
    pub memory: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write `<scenario>-cpu.svg` and `<scenario>-memory.svg` into DIR.
    #[arg(long, value_name = "DIR")]
    pub plot: Option<PathBuf>,
    /// Run each scenario under N noise seeds (its own seed and the next N-1): figures become
    /// means with 95% confidence intervals, verdicts a paired t-test.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub seeds: u32,
    /// In the table, only the summary across scenarios (no per-scenario tables).
    #[arg(long)]
    pub summary_only: bool,
    /// Write a self-contained HTML report (summary, tables, charts, what was run) to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Parallel runs (default: the number of CPUs).
    #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub jobs: Option<u32>,
    /// Unused memory a VM should keep, for the memory figures.
    #[arg(long, value_name = "MIB", default_value_t = 100.0, value_parser = parse_mib)]
    pub threshold_mib: f64,
    /// Wall-clock seconds one run may take before it is stopped and reported as failed.
    #[arg(long, value_name = "S", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub run_limit_s: u64,
}

/// `vcoord replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// A recording (`vcoord run --record FILE`).
    #[arg(value_name = "TRACE")]
    pub trace: PathBuf,
    /// The configuration whose policies replay it.
    #[arg(short = 'c', long, value_name = "FILE")]
    pub config: PathBuf,
    /// The host of the configuration (and of the recording, when it holds several).
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReplayFormat::Table)]
    pub format: ReplayFormat,
}

/// `vcoord scenario`.
#[derive(Debug, Subcommand)]
pub enum ScenarioCommand {
    /// Turn a recording (`vcoord run --record`) into a scenario: each VM's vCPU demand
    /// (utilization + run-queue wait) and guest memory use over time, its size, pins, arrival
    /// and departure; the host's pCPUs, topology and memory. Then `vcoord compare FILE
    /// --config a.toml --config b.toml` is A/B on that host's workload.
    #[command(name = "from-record")]
    FromRecord {
        /// The recording.
        #[arg(value_name = "TRACE")]
        trace: PathBuf,
        /// Where to write the scenario (TOML).
        #[arg(short = 'o', long, value_name = "FILE")]
        output: PathBuf,
        /// The host to take, when the recording holds several.
        #[arg(long, value_name = "NAME")]
        host: Option<String>,
        /// The scenario's name (default: the output file's stem).
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
    /// Turn a public VM trace into a scenario on a host you size: GWA-T-12 (Bitbrains; one
    /// file per VM, or a folder of them), Azure `vm_cpu_readings` (CPU only; memory from a
    /// stated model) or a plain CSV (`vm,time_s,vcpus,memory_mib,cpu_pct,used_mib`). Each VM's
    /// CPU demand and memory use over time, its size, arrival and departure. See
    /// docs/traces.md.
    #[command(name = "from-trace")]
    FromTrace(FromTraceArgs),
}

/// `vcoord scenario from-trace`.
#[derive(Debug, Args)]
pub struct FromTraceArgs {
    /// Trace files, or folders of them (GWA-T-12: every `*.csv` inside, by number).
    #[arg(value_name = "TRACE", required = true)]
    pub traces: Vec<PathBuf>,
    /// Where to write the scenario (TOML).
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: PathBuf,
    /// The trace's format.
    #[arg(long, value_enum, default_value_t = TraceFormatArg::Gwa)]
    pub format: TraceFormatArg,
    /// The scenario's name (default: the output file's stem).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Take at most this many VMs (those that ever run, in order).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub vms: Option<u32>,
    /// Skip this many VMs first.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub skip: u32,
    /// Take this many hours of the trace from its start (default: all of it, at most 7
    /// simulated days).
    #[arg(long, value_name = "H")]
    pub hours: Option<f64>,
    /// Trace seconds per simulated second (5: a 300 s sample interval lasts 60 s).
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    pub time_scale: f64,
    /// pCPUs of the host (default: the VMs' vCPUs over --cpu-overcommit).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub pcpus: Option<u32>,
    /// vCPUs per pCPU when --pcpus is not given.
    #[arg(long, value_name = "R", default_value_t = 4.0)]
    pub cpu_overcommit: f64,
    /// Memory of the host, MiB (default: the VMs' provisioned memory over --memory-overcommit,
    /// plus --host-used-mib).
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..))]
    pub memory_mib: Option<u64>,
    /// Provisioned guest memory per MiB of host memory when --memory-mib is not given.
    #[arg(long, value_name = "R", default_value_t = 1.5)]
    pub memory_overcommit: f64,
    /// Memory the host keeps for itself, MiB.
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    pub host_used_mib: u64,
    /// Swap of each guest, MiB.
    #[arg(long, value_name = "MIB", default_value_t = 0)]
    pub swap_mib: u64,
    /// The scenario's seed (compare's --seeds count up from it).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// The shortest share of a sample interval a memory change takes: each interval's change
    /// happens within a window the seed draws, from this share of the interval to all of it
    /// (1: changes are linear).
    #[arg(long, value_name = "SHARE", default_value_t = 0.5)]
    pub burst: f64,
    /// Azure: vCPUs of every VM.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub azure_vcpus: u32,
    /// Azure: memory of every VM, MiB.
    #[arg(long, value_name = "MIB", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(64..))]
    pub azure_memory_mib: u64,
}

/// `vcoord bench trace`.
#[derive(Debug, Args)]
pub struct TraceBenchArgs {
    /// GWA-T-12 trace files, or folders of them.
    #[arg(value_name = "TRACE", required = true)]
    pub traces: Vec<PathBuf>,
    /// Take at most this many VMs.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub vms: Option<u32>,
    /// Take this many hours of the trace (default: all of it, at most a week).
    #[arg(long, value_name = "H")]
    pub hours: Option<f64>,
    /// Trace seconds per simulated second.
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    pub time_scale: f64,
    /// The host's memory: the VMs' provisioned memory over this ratio.
    #[arg(long, value_name = "R", default_value_t = 1.5)]
    pub memory_overcommit: f64,
    /// Runs per contender: seeds 1, 2, ...
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub seeds: u32,
    /// Also search each contender's density.
    #[arg(long)]
    pub density: bool,
    /// The density host's memory: all the VMs' provisioned memory over this ratio.
    #[arg(long, value_name = "R", default_value_t = 4.0)]
    pub density_overcommit: f64,
    /// Where the example plugins are (default: beside this executable).
    #[arg(long, value_name = "DIR")]
    pub plugin_dir: Option<PathBuf>,
    /// Where the scenarios are written (default: a new folder under $TMPDIR).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Parallel runs (default: one per CPU).
    #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub jobs: Option<u32>,
    /// Wall-clock seconds one run may take.
    #[arg(long, value_name = "S", default_value_t = 7200, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub run_limit_s: u64,
}

/// A trace format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TraceFormatArg {
    /// GWA-T-12 (Bitbrains): one `;`-separated file per VM.
    Gwa,
    /// Azure Public Dataset `vm_cpu_readings`.
    Azure,
    /// Plain CSV: `vm,time_s,vcpus,memory_mib,cpu_pct,used_mib`.
    Csv,
}

/// `vcoord bench`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The trace benchmark: a GWA-T-12 trace (files or folders) as a scenario on a host sized
    /// from it; vcoord's defaults, the seed's policies, no memory policy and the Proxmox and
    /// MOM re-implementations (example plugins) compared under several seeds; with --density,
    /// each one's density (the most VMs a host of fixed size holds). See docs/traces.md.
    Trace(TraceBenchArgs),
    /// What collection costs per tick on a live host (time, calls, libvirtd CPU).
    Collect {
        /// libvirt URI of the host.
        #[arg(long, value_name = "URI", value_parser = parse_uri)]
        connect: String,
        /// Ticks to measure.
        #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
        ticks: u32,
    },
    /// Decision time of each built-in CPU policy at 1,000 and 10,000 vCPUs.
    Policies {
        /// Best of N runs.
        #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
        repeat: u32,
    },
    /// What metrics cost: ms per tick without and with metrics and a scrape every tick.
    Metrics {
        /// The host (default: a simulated host of 32 VMs on 8 pCPUs).
        #[arg(short = 'c', long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The host of the configuration (default: its first).
        #[arg(long, value_name = "NAME")]
        host: Option<String>,
        /// Ticks per run.
        #[arg(long, value_name = "N", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
        ticks: u64,
    },
    /// Dry-run ticks against a live host: vcoord's and libvirtd's memory and descriptors.
    Soak {
        /// Configuration file.
        #[arg(short = 'c', long, value_name = "FILE")]
        config: PathBuf,
        /// The host of the configuration (default: its first).
        #[arg(long, value_name = "NAME")]
        host: Option<String>,
        /// Ticks to run.
        #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
        ticks: u64,
        /// Report every N ticks.
        #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
        every: u64,
    },
}

/// `vcoord status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// libvirt URI of the host, `sim:SCENARIO`, or a running daemon's metrics endpoint
    /// (`http://127.0.0.1:9477`: what the daemon saw at its last tick).
    #[arg(long, value_name = "URI", value_parser = parse_uri)]
    pub connect: String,
    /// Print the status document as JSON (what the daemon serves at /status.json).
    #[arg(long)]
    pub json: bool,
    /// Seconds between the two samples.
    #[arg(long, value_name = "S", default_value_t = 1.0, value_parser = parse_window)]
    pub window_s: f64,
    /// Log level or filter directives.
    #[arg(long, value_name = "FILTER", value_parser = parse_filter, default_value = "warn")]
    pub log_level: String,
}

/// A URI written out: an empty one would be libvirt's default, whatever that is here.
fn parse_uri(text: &str) -> Result<String, String> {
    let uri = text.trim();
    if uri.is_empty() {
        return Err(
            "an empty URI is libvirt's guess, not a host: name one (qemu:///system)".into(),
        );
    }
    Ok(uri.to_owned())
}

fn parse_filter(text: &str) -> Result<String, String> {
    // A bare word would be taken as a target name: only level names are words here.
    let levels = ["off", "error", "warn", "info", "debug", "trace"];
    if !text.contains(['=', ',']) && !levels.contains(&text.to_ascii_lowercase().as_str()) {
        return Err(format!(
            "`{text}` is not a log level (error, warn, info, debug, trace) or filter"
        ));
    }
    tracing_subscriber::EnvFilter::try_new(text)
        .map(|_| text.to_owned())
        .map_err(|e| format!("`{text}` is not a log level or filter: {e}"))
}

fn parse_mib(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 1e9 => Ok(v),
        _ => Err(format!("`{text}` is not a size in MiB (a number above 0)")),
    }
}

fn parse_window(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (0.1..=60.0).contains(&v) => Ok(v),
        _ => Err(format!("`{text}` is not between 0.1 and 60 seconds")),
    }
}

/// The log filter in `$RUST_LOG`, else in `$VCOORD_LOG`, if either is set and valid.
pub fn filter_from_env() -> Option<String> {
    ["RUST_LOG", "VCOORD_LOG"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|v| !v.trim().is_empty() && parse_filter(v).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("vcoord").chain(args.iter().copied()))
    }

    #[test]
    fn the_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn config_takes_both_spellings_and_dash_c() {
        for args in [
            &["run", "--config", "x.toml"][..],
            &["run", "--config=x.toml"],
            &["run", "-c", "x.toml"],
        ] {
            let Command::Run(run) = parse(args).unwrap().command else {
                panic!("not run")
            };
            assert_eq!(run.config, PathBuf::from("x.toml"));
        }
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["compare", "s", "--cpu", "a", "--jobs", "0"]).is_err());
        assert!(parse(&["compare", "s", "--cpu", "a", "--threshold-mib", "nan"]).is_err());
        assert!(parse(&["status", "--connect", "x", "--window-s", "100"]).is_err());
        assert!(parse(&["run", "--log-level", "loud"]).is_err());
        assert!(parse(&["compare", "s", "-c", "a.toml", "--cpu", "x"]).is_err());
        assert!(parse(&["replay", "t", "-c", "c.toml", "--format", "csv"]).is_err());
    }
}
