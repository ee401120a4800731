//! The `sip-cpim-gateway` binary: `run` (default), `lint`, `check-config`.

use bytes::Bytes;
use clap::{Parser, Subcommand};
use sip_cpim_gateway::config::Config;
use sip_cpim_gateway::lint;
use std::path::PathBuf;
use std::process::ExitCode;

/// jemalloc instead of glibc malloc: the gateway holds many small
/// long-lived records (subscriptions, dialogs) between bursts of
/// short-lived transaction state; with glibc the bursts fragment the heap
/// and the process keeps their pages, jemalloc's size-class slabs and
/// decay return them (issue 4: memory per subscription, docs/performance.md).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "sip-cpim-gateway",
    version,
    about = "SIP <-> CPIM presence gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration file (for the default `run`).
    #[arg(long, default_value = "gateway.toml")]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Serve SIP and the CPIM API (the default).
    Run {
        #[arg(long, default_value = "gateway.toml")]
        config: PathBuf,
    },
    /// Parse captured SIP messages, one per file, and report faults.
    Lint {
        /// Print one JSON object per file instead of text.
        #[arg(long)]
        json: bool,
        /// Configuration whose [sip.limits] apply (defaults otherwise).
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Validate a configuration file.
    CheckConfig { path: Option<PathBuf> },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => run(&cli.config),
        Some(Command::Run { config }) => run(&config),
        Some(Command::Lint {
            json,
            config,
            files,
        }) => lint_files(json, config, &files),
        Some(Command::CheckConfig { path }) => {
            let path = path.unwrap_or_else(|| PathBuf::from("gateway.toml"));
            match Config::load(&path) {
                Ok(_) => {
                    println!("{}: ok", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run(path: &std::path::Path) -> ExitCode {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(&cfg.log);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let server = match sip_cpim_gateway::server::Server::start(&cfg).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        for (proto, addr) in server.transport.local_addrs() {
            tracing::info!(%proto, %addr, "SIP listening");
            println!(
                "SIP listening: {}:{addr}",
                proto.via_token().to_ascii_lowercase()
            );
        }
        println!("CPIM HTTP listening: {}", server.http);
        println!("serving; SIGINT or SIGTERM stops");
        wait_for_signal().await;
        tracing::info!("shutting down");
        server.shutdown(std::time::Duration::from_secs(5)).await;
        println!("stopped: store flushed");
        ExitCode::SUCCESS
    })
}

/// `[log]`: the level filter from the file unless `RUST_LOG` is set, text
/// or JSON lines on stderr (stdout carries the startup lines scripts read).
fn init_logging(log: &sip_cpim_gateway::config::LogConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .ok()
        .or_else(|| EnvFilter::builder().parse(&log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if log.format == "json" {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        builder.init();
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn lint_files(json: bool, config: Option<PathBuf>, files: &[PathBuf]) -> ExitCode {
    let limits = match config.map(|p| Config::load(&p)) {
        Some(Ok(c)) => c.sip.limits,
        Some(Err(e)) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
        None => Default::default(),
    };
    let mut all_ok = true;
    for f in files {
        let name = f.display().to_string();
        let bytes = match std::fs::read(f) {
            Ok(b) => b,
            Err(e) => {
                all_ok = false;
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"file": name, "valid": false, "fault": {"error": e.to_string()}})
                    );
                } else {
                    println!("{name}: ERROR: cannot read: {e}");
                }
                continue;
            }
        };
        let r = lint::lint_bytes(Bytes::from(bytes), &limits);
        all_ok &= r.is_ok();
        if json {
            println!("{}", lint::to_json(&name, &r));
        } else {
            println!("{}", lint::format_line(&name, &r));
        }
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
