//! Command-line parsing (small enough to do by hand).

use std::path::PathBuf;

use tracing::Level;

pub const USAGE: &str = "\
vcoord: host-level vCPU and memory coordinator for libvirt/QEMU hosts

Usage:
  vcoord run [--config FILE] [--host NAME] [--ticks N] [--dry-run] [--record FILE]
             [--realtime] [--log-level LEVEL]
      Coordinate the configured hosts (default config /etc/vcoord/vcoord.toml).
      --ticks N        stop after N ticks (a simulated host stops at the scenario's end)
      --dry-run        decide and log, change nothing
      --record FILE    write one JSON line per tick
      --realtime       run simulated hosts in real time
      --log-level L    error, warn, info (default), debug, trace
  vcoord compare SCENARIO... (--config FILE... | [--cpu POLICY...] [--memory POLICY...])
               [--format table|json|csv] [--plot DIR] [--jobs N] [--threshold-mib N]
      Run each policy choice on each scenario (files or folders) on the simulator and compare.
      POLICY is a built-in name or a plugin file (a path with `/` or ending in .so).
      --config FILE    a contender: the policies (and guard) of each host of FILE
      --plot DIR       write <scenario>-cpu.svg and <scenario>-memory.svg into DIR
      --jobs N         parallel runs (default: the number of CPUs)
      --threshold-mib  unused memory a VM should keep, for the memory figures (default 100)
  vcoord replay TRACE --config FILE [--host NAME] [--format table|json]
      Feed the snapshots of a recording (vcoord run --record) to FILE's policies and report
      what they would have done beside what was done (open loop).
  vcoord bench collect --connect URI [--ticks N]
      What collection costs per tick on a live host: vcoord's CPU-path and full ticks, the
      libvirt-only path, a per-domain poller and the bare bulk call (time, calls, libvirtd CPU).
  vcoord bench policies [--repeat N]
      Decision time of each built-in CPU policy at 1,000 and 10,000 vCPUs on 64 and 256 pCPUs.
  vcoord bench soak --config FILE [--host NAME] [--ticks N] [--every N]
      Dry-run ticks against a live host; vcoord's and libvirtd's memory and descriptors.
  vcoord status --connect URI [--window-s S]
      One-shot table of the VMs of a host: vCPU load over a short window, pinning, memory.
  vcoord policies [--config FILE]
      List the built-in policies with their parameters (and what each host of FILE uses).
  vcoord check-config FILE
      Validate a configuration file.
  vcoord --help | --version";

pub struct RunArgs {
    pub config: Option<PathBuf>,
    pub host: Option<String>,
    pub ticks: Option<u64>,
    pub dry_run: bool,
    pub record: Option<PathBuf>,
    pub realtime: bool,
    pub log_level: Level,
}

pub struct StatusArgs {
    pub uri: String,
    pub window_s: f64,
    pub log_level: Level,
}

pub struct CompareArgs {
    pub scenarios: Vec<PathBuf>,
    pub configs: Vec<PathBuf>,
    pub cpu: Vec<String>,
    pub memory: Vec<String>,
    pub format: Format,
    pub plot: Option<PathBuf>,
    pub jobs: Option<usize>,
    pub threshold_mib: f64,
}

pub struct ReplayArgs {
    pub trace: PathBuf,
    pub config: PathBuf,
    pub host: Option<String>,
    pub format: Format,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
}

fn format(text: &str) -> Result<Format, String> {
    match text {
        "table" => Ok(Format::Table),
        "json" => Ok(Format::Json),
        "csv" => Ok(Format::Csv),
        other => Err(format!("--format: `{other}` is not table, json or csv")),
    }
}

pub enum BenchArgs {
    Collect {
        uri: String,
        ticks: u32,
    },
    Policies {
        repeat: u32,
    },
    Soak {
        config: PathBuf,
        host: Option<String>,
        ticks: u64,
        every: u64,
    },
}

pub enum Command {
    Bench(BenchArgs),
    Compare(CompareArgs),
    Replay(ReplayArgs),
    Help,
    Version,
    Run(RunArgs),
    Status(StatusArgs),
    Policies { config: Option<PathBuf> },
    CheckConfig { path: PathBuf },
}

struct Args<I: Iterator<Item = String>> {
    it: I,
}

impl<I: Iterator<Item = String>> Args<I> {
    fn value(&mut self, flag: &str) -> Result<String, String> {
        self.it
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))
    }
    fn number<T: std::str::FromStr>(&mut self, flag: &str) -> Result<T, String> {
        let v = self.value(flag)?;
        v.parse()
            .map_err(|_| format!("{flag}: `{v}` is not a valid number"))
    }
}

fn level(text: &str) -> Result<Level, String> {
    text.parse()
        .map_err(|_| format!("--log-level: unknown level `{text}`"))
}

fn default_level() -> Level {
    std::env::var("VCOORD_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(Level::INFO)
}

pub fn parse(args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut args = Args { it: args };
    let Some(sub) = args.it.next() else {
        return Ok(Command::Help);
    };
    match sub.as_str() {
        "-h" | "--help" | "help" => Ok(Command::Help),
        "-V" | "--version" => Ok(Command::Version),
        "run" => {
            let mut run = RunArgs {
                config: None,
                host: None,
                ticks: None,
                dry_run: false,
                record: None,
                realtime: false,
                log_level: default_level(),
            };
            while let Some(flag) = args.it.next() {
                match flag.as_str() {
                    "--config" | "-c" => run.config = Some(args.value(&flag)?.into()),
                    "--host" => run.host = Some(args.value(&flag)?),
                    "--ticks" => run.ticks = Some(args.number(&flag)?),
                    "--dry-run" => run.dry_run = true,
                    "--record" => run.record = Some(args.value(&flag)?.into()),
                    "--realtime" => run.realtime = true,
                    "--log-level" => run.log_level = level(&args.value(&flag)?)?,
                    other => return Err(format!("run: unknown argument `{other}`")),
                }
            }
            Ok(Command::Run(run))
        }
        "compare" => {
            let mut c = CompareArgs {
                scenarios: Vec::new(),
                configs: Vec::new(),
                cpu: Vec::new(),
                memory: Vec::new(),
                format: Format::Table,
                plot: None,
                jobs: None,
                threshold_mib: 100.0,
            };
            while let Some(arg) = args.it.next() {
                match arg.as_str() {
                    "--config" | "-c" => c.configs.push(args.value(&arg)?.into()),
                    "--cpu" => c.cpu.push(args.value(&arg)?),
                    "--memory" => c.memory.push(args.value(&arg)?),
                    "--format" => c.format = format(&args.value(&arg)?)?,
                    "--plot" => c.plot = Some(args.value(&arg)?.into()),
                    "--jobs" | "-j" => c.jobs = Some(args.number(&arg)?),
                    "--threshold-mib" => c.threshold_mib = args.number(&arg)?,
                    flag if flag.starts_with('-') => {
                        return Err(format!("compare: unknown argument `{flag}`"))
                    }
                    path => c.scenarios.push(path.into()),
                }
            }
            if c.scenarios.is_empty() {
                return Err("compare needs at least one scenario file or folder".into());
            }
            let by_flag = !c.cpu.is_empty() || !c.memory.is_empty();
            if !c.configs.is_empty() && by_flag {
                return Err("compare: give either --config files or --cpu/--memory choices".into());
            }
            let contenders = if c.configs.is_empty() {
                c.cpu.len().max(1) * c.memory.len().max(1)
            } else {
                c.configs.len()
            };
            if contenders < 2 && c.configs.len() < 2 {
                return Err(
                    "compare needs two or more choices (--config twice, or --cpu / --memory twice)"
                        .into(),
                );
            }
            Ok(Command::Compare(c))
        }
        "bench" => {
            let what = args
                .it
                .next()
                .ok_or("bench needs collect, policies or soak")?;
            let mut uri = None;
            let mut config = None;
            let mut host = None;
            let mut ticks: Option<u64> = None;
            let mut every = 1000;
            let mut repeat = 3;
            while let Some(flag) = args.it.next() {
                match flag.as_str() {
                    "--connect" | "-c" if what == "collect" => uri = Some(args.value(&flag)?),
                    "--config" if what == "soak" => config = Some(args.value(&flag)?.into()),
                    "--host" if what == "soak" => host = Some(args.value(&flag)?),
                    "--ticks" if what != "policies" => ticks = Some(args.number(&flag)?),
                    "--every" if what == "soak" => every = args.number(&flag)?,
                    "--repeat" if what == "policies" => repeat = args.number(&flag)?,
                    other => return Err(format!("bench {what}: unknown argument `{other}`")),
                }
            }
            match what.as_str() {
                "collect" => Ok(Command::Bench(BenchArgs::Collect {
                    uri: uri.ok_or("bench collect needs --connect URI")?,
                    ticks: ticks.unwrap_or(50).max(1) as u32,
                })),
                "policies" => Ok(Command::Bench(BenchArgs::Policies { repeat })),
                "soak" => Ok(Command::Bench(BenchArgs::Soak {
                    config: config.ok_or("bench soak needs --config FILE")?,
                    host,
                    ticks: ticks.unwrap_or(10_000).max(1),
                    every: every.max(1),
                })),
                other => Err(format!("bench: `{other}` is not collect, policies or soak")),
            }
        }
        "replay" => {
            let mut trace = None;
            let mut config = None;
            let mut host = None;
            let mut fmt = Format::Table;
            while let Some(arg) = args.it.next() {
                match arg.as_str() {
                    "--config" | "-c" => config = Some(args.value(&arg)?.into()),
                    "--host" => host = Some(args.value(&arg)?),
                    "--format" => fmt = format(&args.value(&arg)?)?,
                    flag if flag.starts_with('-') => {
                        return Err(format!("replay: unknown argument `{flag}`"))
                    }
                    path if trace.is_none() => trace = Some(path.into()),
                    extra => return Err(format!("replay: unexpected argument `{extra}`")),
                }
            }
            if fmt == Format::Csv {
                return Err("replay: --format is table or json".into());
            }
            Ok(Command::Replay(ReplayArgs {
                trace: trace.ok_or("replay needs a recording (vcoord run --record FILE)")?,
                config: config.ok_or("replay needs --config FILE")?,
                host,
                format: fmt,
            }))
        }
        "status" => {
            let mut uri = None;
            let mut window_s = 1.0;
            let mut log_level = Level::WARN;
            while let Some(flag) = args.it.next() {
                match flag.as_str() {
                    "--connect" | "-c" => uri = Some(args.value(&flag)?),
                    "--window-s" => window_s = args.number(&flag)?,
                    "--log-level" => log_level = level(&args.value(&flag)?)?,
                    other => return Err(format!("status: unknown argument `{other}`")),
                }
            }
            if !(0.1..=60.0).contains(&window_s) {
                return Err("--window-s must be between 0.1 and 60".into());
            }
            Ok(Command::Status(StatusArgs {
                uri: uri.ok_or("status needs --connect URI")?,
                window_s,
                log_level,
            }))
        }
        "policies" => {
            let mut config = None;
            while let Some(flag) = args.it.next() {
                match flag.as_str() {
                    "--config" | "-c" => config = Some(args.value(&flag)?.into()),
                    other => return Err(format!("policies: unknown argument `{other}`")),
                }
            }
            Ok(Command::Policies { config })
        }
        "check-config" => {
            let path = args.it.next().ok_or("check-config needs a FILE")?;
            if let Some(extra) = args.it.next() {
                return Err(format!("check-config: unexpected argument `{extra}`"));
            }
            Ok(Command::CheckConfig { path: path.into() })
        }
        other => Err(format!("unknown command `{other}`")),
    }
}
