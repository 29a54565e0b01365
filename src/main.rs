//! The `journeyd` command line. The library does the work; this file parses
//! arguments, sets up logging and signals, and prints results.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use journeyd::config;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

journeyd::global_allocator!();

#[derive(Parser)]
#[command(name = "journeyd", version, about = "Streaming customer-journey processor: NATS touchpoints in; journey transitions and channel-effect metrics out")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run live against NATS until SIGINT/SIGTERM.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file and report every problem with its key and line.
    CheckConfig { file: PathBuf },
    /// Run the engine over an NDJSON file and print the final stage counts.
    Replay {
        #[arg(long, short)]
        config: PathBuf,
        events: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Start nats-server and journeyd locally, publish simulated traffic, show a live view.
    Demo(journeyd::demo::DemoArgs),
    /// Publish simulated traffic (or write NDJSON) with the answer a correct engine must give.
    Sim(journeyd::sim::SimArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
    Prometheus,
}

fn load(path: &std::path::Path) -> anyhow::Result<config::Config> {
    match config::load(path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("{}: {w}", path.display());
            }
            Ok(loaded.config)
        }
        Err(e) => Err(anyhow::anyhow!("{e}")),
    }
}

/// Prints to stdout; a closed pipe (`| head`) is not an error.
fn print_out(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("JOURNEYD_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// The demo draws its own screen: only warnings from the engine.
fn init_logging_quiet() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("JOURNEYD_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// First SIGINT/SIGTERM: graceful shutdown. Second: exit at once.
fn on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot install SIGTERM handler");
                return;
            }
        };
        for n in 0..2 {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if n == 0 {
                tracing::info!("shutting down: draining in-flight events (signal again to force)");
                token.cancel();
            } else {
                tracing::warn!("forced exit");
                std::process::exit(130);
            }
        }
    });
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("journeyd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("journeyd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { config } => {
            init_logging();
            let cfg = load(&config)?;
            let token = CancellationToken::new();
            on_signals(token.clone());
            journeyd::run(cfg, token).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => {
            init_logging_quiet();
            journeyd::demo::run(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sim(args) => {
            init_logging();
            let code = journeyd::sim::run(args).await?;
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        Command::CheckConfig { file } => match config::load(&file) {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    println!("{}: {w}", file.display());
                }
                let plan = journeyd::model::Plan::new(loaded.config);
                let series = journeyd::metrics::worst_case_series(&plan);
                let mut text = format!(
                    "{}: ok ({}, {}, {}, {})\n",
                    file.display(),
                    count(plan.models.len(), "model"),
                    count(plan.funnels.len(), "funnel"),
                    count(plan.triggers.len(), "trigger"),
                    count(loaded.warnings.len(), "warning")
                );
                text += &format!("worst-case Prometheus series: {}\n", series.iter().map(|(_, n)| n).sum::<usize>());
                for (name, n) in series {
                    text += &format!("  {name:45} {n:>7}\n");
                }
                print_out(&text);
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprint!("{e}");
                Ok(ExitCode::from(2))
            }
        },
        Command::Replay { config, events, format } => {
            let cfg = load(&config)?;
            let summary = journeyd::replay::replay(cfg, &events, |line, reason, detail| eprintln!("{}:{line}: {reason}: {detail}", events.display()))
                .await
                .with_context(|| format!("replaying {}", events.display()))?;
            match format {
                Format::Text => print_out(&summary.to_text()),
                Format::Json => print_out(&(serde_json::to_string_pretty(&summary)? + "\n")),
                Format::Prometheus => print_out(&summary.metrics_text),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// "1 model", "2 models".
fn count(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_writing_a_file_refuses_the_options_only_publishing_uses() {
        let base = ["journeyd", "sim", "--config", "c.toml", "--out", "e.ndjson"];
        assert!(Cli::try_parse_from(base).is_ok());
        for extra in [&["--jetstream"][..], &["--verify", "http://127.0.0.1:9464"], &["--nats-url", "nats://127.0.0.1:4222"]] {
            let args: Vec<&str> = base.iter().chain(extra).copied().collect();
            assert!(Cli::try_parse_from(&args).is_err(), "{args:?}");
        }
    }
}
