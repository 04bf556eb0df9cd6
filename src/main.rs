//! `vcoord`: the command line over vcoord-core.

mod cli;
mod compare;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use vcoord_core::config::Config;
use vcoord_core::params::ParamSpec;
use vcoord_core::plugin::Kind;
use vcoord_core::policy::{cpu_policies, memory_policies};
use vcoord_core::runtime::{run_host, RunOptions};

use clap::{CommandFactory, Parser};
use cli::{Cli, Command, RunArgs};

fn main() -> ExitCode {
    vcoord_policies::link();
    let cli = Cli::parse();
    let level = match &cli.command {
        Command::Run(args) => args.log_level.unwrap_or_else(cli::default_level),
        Command::Status(args) => args.log_level,
        _ => tracing::Level::WARN,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    vcoord_core::policy::route_logs_to_tracing();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Compare(args) => compare::compare(args),
        Command::Bench(args) => bench(args),
        Command::Replay(args) => compare::replay(args),
        Command::Policies { config } => list_policies(config.as_deref()),
        Command::CheckConfig { file } => check_config(&file),
        Command::Status(args) => {
            vcoord_core::tools::status::print_status(&args.connect, args.window_s)
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
            eprintln!("vcoord: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> Result<()> {
    let config_path = args.config.clone();
    let config = Config::from_file(&config_path)?;
    let hosts: Vec<_> = match &args.host {
        Some(name) => {
            let host = config
                .hosts
                .iter()
                .find(|h| &h.name == name)
                .with_context(|| format!("{}: no host named `{name}`", config_path.display()))?;
            vec![host.clone()]
        }
        None => config.hosts.clone(),
    };
    let record: Option<Mutex<BufWriter<File>>> = match &args.record {
        Some(path) => Some(Mutex::new(BufWriter::new(
            File::create(path).with_context(|| format!("creating record {}", path.display()))?,
        ))),
        None => None,
    };
    let options = RunOptions {
        ticks: args.ticks,
        dry_run: args.dry_run,
        realtime: args.realtime,
        record_snapshots: args.record.is_some(),
    };
    let results: Vec<Result<u64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = hosts
            .iter()
            .map(|host| {
                let record = record.as_ref();
                let options = &options;
                scope.spawn(move || {
                    let mut sink = record.map(LockedWriter);
                    run_host(
                        host,
                        options,
                        sink.as_mut().map(|s| s as &mut (dyn Write + Send)),
                    )
                    .map_err(anyhow::Error::from)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("a host thread panicked")))
            .collect()
    });
    if let Some(record) = record {
        record
            .into_inner()
            .map_err(|_| anyhow::anyhow!("record writer poisoned"))?
            .flush()
            .context("flushing the record")?;
    }
    let mut failed = false;
    for r in results {
        if let Err(e) = r {
            eprintln!("vcoord: error: {e:#}");
            failed = true;
        }
    }
    if failed {
        bail!("at least one host failed");
    }
    Ok(())
}

/// Writes whole lines into a shared writer, so hosts running in parallel do not interleave.
struct LockedWriter<'a, W: Write>(&'a Mutex<W>);

impl<W: Write> Write for LockedWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let mut w = self
            .0
            .lock()
            .map_err(|_| std::io::Error::other("record writer poisoned"))?;
        w.write_all(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn bench(args: cli::BenchCommand) -> Result<()> {
    use vcoord_core::tools::bench;
    match args {
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
            for kind in [Kind::Cpu, Kind::Memory] {
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
    let config = Config::from_file(path)?;
    for host in &config.hosts {
        host.build_cpu_policy()
            .map_err(|e| anyhow::anyhow!("host {}: {e}", host.name))?;
        host.build_memory_policy()
            .map_err(|e| anyhow::anyhow!("host {}: {e}", host.name))?;
    }
    println!(
        "{}: ok ({} host{})",
        path.display(),
        config.hosts.len(),
        if config.hosts.len() == 1 { "" } else { "s" }
    );
    Ok(())
}
