//! `vcoord`: the command line over vcoord-core.

mod bench_trace;
mod cli;
mod compare;
mod replay;
mod scenario;

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use vcoord_core::config::Config;
use vcoord_core::params::ParamSpec;
use vcoord_core::plugin::Kind;
use vcoord_core::policy::{cpu_policies, memory_policies};
use vcoord_core::runtime::control::Control;
use vcoord_core::runtime::record::Recorder;
use vcoord_core::runtime::RunOptions;
use vcoord_core::service::daemon::{self, DaemonOptions};
use vcoord_core::service::lock;
use vcoord_core::service::notify::Notifier;
use vcoord_core::show;

use clap::{CommandFactory, Parser};
use cli::{Cli, Command, LogFormat, RunArgs};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    vcoord_policies::link();
    let cli = Cli::parse();
    let (filter, format) = match &cli.command {
        Command::Run(args) => (
            args.log_level
                .clone()
                .or_else(cli::filter_from_env)
                .or_else(|| {
                    // The configuration's own level (its errors are reported later, once).
                    Config::from_file(&args.config).ok()?.log_level
                })
                .unwrap_or_else(|| "info".to_owned()),
            args.log_format,
        ),
        Command::Status(args) => (args.log_level.clone(), LogFormat::Text),
        // Runs on the simulator by the hundred: what their guards and guests do is in the
        // figures, not in the log (VCOORD_LOG shows it).
        Command::Compare(_) | Command::Bench(cli::BenchCommand::Trace(_)) => (
            cli::filter_from_env().unwrap_or_else(|| "error".to_owned()),
            LogFormat::Text,
        ),
        _ => ("warn".to_owned(), LogFormat::Text),
    };
    init_logging(&filter, format);
    vcoord_core::policy::route_logs_to_tracing();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Compare(args) => compare::compare(args),
        Command::Bench(args) => bench(args),
        Command::Replay(args) => replay::replay(args),
        Command::Scenario(cli::ScenarioCommand::FromRecord {
            trace,
            output,
            host,
            name,
        }) => scenario::scenario_from_record(&trace, &output, host.as_deref(), name.as_deref()),
        Command::Scenario(cli::ScenarioCommand::FromTrace(args)) => {
            scenario::scenario_from_trace(&args)
        }
        Command::Policies { config } => list_policies(config.as_deref()),
        Command::CheckConfig { file } => check_config(&file),
        Command::Status(args) => {
            vcoord_core::tools::status::print_status(&args.connect, args.window_s, args.json)
                .with_context(|| format!("status of {}", args.connect))
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "vcoord", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .context("writing the manual page"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vcoord: error: {}", show::one_line(&error_chain(&e), false));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes, each said once: a cause already in the text is not repeated
/// (`config x: Is a directory (os error 21)`, not twice).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

/// Logs to stderr: colored text on a terminal (unless NO_COLOR is set), plain text elsewhere
/// (a file, the journal), or one JSON object per line.
fn init_logging(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let color = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(OneLineStderr { colour: color })
        .with_target(false)
        .with_ansi(color);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

/// Stderr for the log: each event stays one line whatever names and errors it carries
/// (control characters escaped; ESC kept only for the log's own colours on a terminal).
struct OneLineStderr {
    colour: bool,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for OneLineStderr {
    type Writer = OneLineStderr;
    fn make_writer(&'a self) -> Self::Writer {
        OneLineStderr {
            colour: self.colour,
        }
    }
}

impl std::io::Write for OneLineStderr {
    /// The log formats an event whole and writes it in one call.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = show::one_line(&String::from_utf8_lossy(buf), self.colour);
        std::io::Write::write_all(&mut std::io::stderr().lock(), text.as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn run(args: RunArgs) -> Result<()> {
    let control = Control::with_signals().context("installing signal handlers")?;
    let notifier = Notifier::from_env();
    let recorder = match &args.record {
        Some(path) => Some(Arc::new(
            Recorder::rotating(path, args.record_max_mib << 20, args.record_keep)
                .with_context(|| format!("creating record {}", path.display()))?,
        )),
        None => None,
    };
    let options = DaemonOptions {
        config: args.config,
        only_host: args.host,
        run: RunOptions {
            ticks: args.ticks,
            dry_run: args.dry_run,
            realtime: args.realtime,
            record_snapshots: args.record.is_some(),
            sim_seed: None,
            state_dir: Some(vcoord_core::runtime::learned::state_dir()),
        },
        lock_dir: lock::run_dir(),
    };
    daemon::run(&options, recorder, &control, &notifier)?;
    Ok(())
}

fn bench(args: cli::BenchCommand) -> Result<()> {
    use vcoord_core::tools::bench;
    match args {
        cli::BenchCommand::Trace(args) => return bench_trace::bench_trace(args),
        cli::BenchCommand::Collect {
            connect: uri,
            ticks,
        } => {
            let (rows, domains, vcpus) =
                bench::collect(&uri, ticks).map_err(|e| anyhow::anyhow!("{uri}: {e}"))?;
            print!("{}", bench::collect_table(&rows, domains, vcpus, ticks));
        }
        cli::BenchCommand::Policies { repeat } => {
            println!(
                "{:<18} {:>7} {:>6} {:>12}",
                "policy", "vCPUs", "pCPUs", "ms/decision"
            );
            for (name, vcpus, pcpus, ms) in bench::policies(repeat) {
                println!("{name:<18} {vcpus:>7} {pcpus:>6} {ms:>12.3}");
            }
        }
        cli::BenchCommand::Metrics {
            config,
            host,
            ticks,
        } => {
            let dir = std::env::temp_dir().join(format!("vcoord-bench-{}", std::process::id()));
            let h = match &config {
                Some(path) => {
                    let cfg = Config::from_file(path)?;
                    match &host {
                        Some(n) => cfg.hosts.iter().find(|h| &h.name == n).cloned(),
                        None => cfg.hosts.first().cloned(),
                    }
                    .with_context(|| format!("{}: no such host", path.display()))?
                }
                None => {
                    std::fs::create_dir_all(&dir)?;
                    let scenario = dir.join("32-vms.toml");
                    std::fs::write(
                        &scenario,
                        "name = \"32 VMs\"\nduration_s = 100000\nseed = 3\n[host]\npcpus = 8\nmemory_mib = 65536\n\
                         [[vm]]\nname = \"vm\"\ncount = 32\nmax_memory_mib = 2048\nmemory_mib = 1024\ncpu = [{ pct = 40 }]\ncpu_noise_pct = 10\n",
                    )?;
                    vcoord_core::config::HostConfig::new(
                        "sim32",
                        &format!("sim:{}", scenario.display()),
                        &dir,
                    )
                }
            };
            let o = bench::metrics_overhead(&h, ticks, 3).map_err(anyhow::Error::msg)?;
            let _ = std::fs::remove_dir_all(&dir);
            println!(
                "{:<10} {:>5} {:>14} {:>17} {:>12}",
                "host", "VMs", "ms/tick", "ms/tick+metrics", "added ms"
            );
            println!(
                "{:<10} {:>5} {:>14.3} {:>17.3} {:>12.3}",
                h.name,
                o.vms,
                o.plain_ms,
                o.observed_ms,
                o.observed_ms - o.plain_ms
            );
        }
        cli::BenchCommand::Soak {
            config,
            host,
            ticks,
            every,
        } => {
            let cfg = Config::from_file(&config)?;
            let h = match &host {
                Some(n) => cfg
                    .hosts
                    .iter()
                    .find(|h| &h.name == n)
                    .with_context(|| format!("{}: no host named `{n}`", config.display()))?,
                None => cfg.hosts.first().context("no host")?,
            };
            bench::soak(h, ticks, every, &mut |line| println!("{line}"))
                .map_err(anyhow::Error::msg)?;
        }
    }
    Ok(())
}

fn list_policies(config: Option<&Path>) -> Result<()> {
    let print_params = |params: &[ParamSpec]| {
        for p in params {
            let default = &p.default;
            let unit = if p.unit.is_empty() {
                String::new()
            } else {
                format!(" [{}]", p.unit)
            };
            println!("      {} = {}{}  {}", p.key, default, unit, p.doc);
        }
    };
    println!("CPU policies (built-in):");
    for p in cpu_policies() {
        println!("  {:<20} {}", p.name, p.description);
        print_params(&(p.params)());
    }
    println!("\nMemory policies (built-in):");
    for p in memory_policies() {
        println!("  {:<20} {}", p.name, p.description);
        print_params(&(p.params)());
    }
    if let Some(path) = config {
        let config = Config::from_file(path)?;
        println!("\nHosts in {}:", path.display());
        for h in &config.hosts {
            println!(
                "  {:<16} cpu: {:<30} memory: {}",
                h.name,
                h.cpu_policy.label(),
                h.memory_policy.label()
            );
        }
        let mut seen = Vec::new();
        let choices = config
            .hosts
            .iter()
            .flat_map(|h| [&h.cpu_policy, &h.memory_policy]);
        for choice in choices {
            let Some(spec) = &choice.plugin else { continue };
            let plugin = vcoord_core::plugin::load(spec).map_err(|e| {
                anyhow::anyhow!("{}: {}.plugin: {e}", path.display(), choice_key(choice))
            })?;
            if seen.contains(&plugin.path) {
                continue;
            }
            if seen.is_empty() {
                println!("\nPlugins:");
            }
            println!(
                "  {:<20} {:<8} {:<11} {}\n      {}",
                plugin.info.name,
                plugin.info.version,
                plugin.kinds(),
                plugin.path.display(),
                plugin.info.description
            );
            for kind in Kind::ALL {
                let params = plugin.params(kind);
                if !params.is_empty() {
                    println!("    {kind} policy parameters:");
                    print_params(&params);
                }
            }
            seen.push(plugin.path);
        }
    }
    Ok(())
}

fn choice_key(choice: &vcoord_core::config::PolicyChoice) -> String {
    choice
        .origin
        .as_ref()
        .map(|o| o.key.clone())
        .unwrap_or_default()
}

fn check_config(path: &Path) -> Result<()> {
    let checked = daemon::check(path)?;
    let hosts = checked.hosts;
    if !checked.degraded.is_empty() {
        // It would run, but not as written: a check passes only what runs as written.
        anyhow::bail!(
            "{}: degraded: {}",
            path.display(),
            checked.degraded.join("; ")
        );
    }
    println!(
        "{}: ok ({hosts} host{})",
        path.display(),
        if hosts == 1 { "" } else { "s" }
    );
    Ok(())
}
