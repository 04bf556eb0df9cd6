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

pub enum Command {
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
