//! xmpp-adapter: the reference CPIM adapter of sip-cpim-gateway. An XEP-0114
//! component per SIP domain towards the XMPP server, the CPIM JSON API
//! towards the gateway (docs/cpim-api.md), the RFC 8048 / RFC 7247 mapping
//! in between (docs/xmpp.md).

mod address;
mod component;
mod config;
mod engine;
mod gateway;
mod http;
mod metrics;
mod model;
mod pidf;
mod runtime;
mod stanza;
mod store;

use clap::{Parser, Subcommand};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

#[derive(Parser)]
#[command(
    name = "xmpp-adapter",
    version,
    about = "SIP ↔ XMPP presence: CPIM adapter and XEP-0114 component"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Configuration file (for `run`).
    #[arg(long, global = true, default_value = "xmpp-adapter.toml")]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve (the default).
    Run,
    /// Validate the configuration (environment overrides included) and exit.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match config::Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    if matches!(cli.cmd, Some(Cmd::CheckConfig)) {
        println!("{}: ok", cli.config.display());
        return ExitCode::SUCCESS;
    }
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.is_empty())
        .and_then(|s| tracing_subscriber::EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::env::var_os("NO_COLOR").is_none())
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(cfg: config::Config) -> Result<(), String> {
    // reqwest is built without a default TLS provider (as the gateway):
    // install ring for https:// gateway URLs.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let prom = metrics::install()?;
    let store = store::Store::new(&cfg.adapter.state_path);
    let state = store.load().map_err(|e| e.to_string())?;
    tracing::info!(
        path = %store.path().display(),
        xmpp_to_sip = state.w2s.len(),
        sip_to_xmpp = state.s2w.len(),
        "state loaded"
    );
    let engine = engine::Engine::new(
        engine::EngineConfig {
            sip_domains: cfg
                .xmpp
                .components
                .iter()
                .map(|c| c.domain.to_ascii_lowercase())
                .collect(),
            duration: cfg.adapter.subscription_duration_s,
            retry_min_s: cfg.adapter.retry_min_s,
            retry_max_s: cfg.adapter.retry_max_s,
        },
        state,
    );
    let gw = gateway::GatewayClient::new(
        &cfg.gateway.url,
        &cfg.gateway.token,
        Duration::from_millis(cfg.gateway.timeout_ms),
    )
    .map_err(|e| e.to_string())?;
    let mut outbound = HashMap::new();
    let mut receivers = vec![];
    for c in &cfg.xmpp.components {
        let (tx, rx) = mpsc::channel(runtime::QUEUE);
        outbound.insert(c.domain.to_ascii_lowercase(), tx);
        receivers.push((c.clone(), rx));
    }
    let shared = runtime::Shared::new(
        engine,
        gw,
        store,
        outbound,
        Duration::from_millis(cfg.gateway.retry_initial_ms),
        Duration::from_millis(cfg.gateway.retry_max_ms),
    );
    let listener = tokio::net::TcpListener::bind(&cfg.adapter.listen)
        .await
        .map_err(|e| format!("adapter.listen {}: {e}", cfg.adapter.listen))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    println!("HTTP listening: {local}");

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = vec![];
    tasks.push(tokio::spawn(shared.clone().persist_loop(stop_rx.clone())));
    for (c, rx) in receivers {
        let task = component::ComponentTask {
            domain: c.domain.to_ascii_lowercase(),
            secret: c.secret,
            server: cfg.xmpp.server.clone(),
            backoff_min: Duration::from_millis(cfg.xmpp.reconnect_min_ms),
            backoff_max: Duration::from_millis(cfg.xmpp.reconnect_max_ms),
        };
        tasks.push(tokio::spawn(task.run(shared.clone(), rx, stop_rx.clone())));
    }
    // Re-create (refresh) every XMPP → SIP subscription from the saved state.
    let ((), _) = shared.with_engine(|e| ((), e.on_start(runtime::now_s())));
    let ticker = {
        let shared = shared.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = iv.tick() => {
                        shared.with_engine(|e| ((), e.on_tick(runtime::now_s())));
                    }
                    _ = stop.changed() => return,
                }
            }
        })
    };
    tasks.push(ticker);
    let app = http::router(http::AppState {
        shared: shared.clone(),
        prom,
    });
    let mut stop_http = stop_rx.clone();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_http.changed().await;
            })
            .await;
    });
    println!("serving");
    shutdown_signal().await;
    tracing::info!("stopping");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    shared.save_now().await;
    println!("stopped: state saved");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
