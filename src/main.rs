//! The `sip-cpim-gateway` binary: `run` (default), `lint`, `check-config`,
//! `export`, `import`, `healthcheck`.

use bytes::Bytes;
use clap::{Parser, Subcommand};
use sip_cpim_gateway::config::Config;
use sip_cpim_gateway::store::{OpenError, SledStore};
use sip_cpim_gateway::{backup, lint};
use std::path::PathBuf;
use std::process::ExitCode;

/// jemalloc instead of glibc malloc: the gateway holds many small
/// long-lived records (subscriptions, dialogs) between bursts of
/// short-lived transaction state; with glibc the bursts fragment the heap
/// and the process keeps their pages, jemalloc's size-class slabs and
/// decay return them (issue 4: memory per subscription, docs/performance.md).
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main`. `background_thread`: freed pages
/// are returned on time (`dirty_decay_ms`, 10 s) by jemalloc's own thread,
/// not only when the arena that freed them allocates again, so the memory
/// of a burst of transactions goes back to the system once the burst ends
/// (issue 4: ~100 B per subscription in `tests/sipp/bench-memory.sh`).
/// `_RJEM_MALLOC_CONF` in the environment still overrides it.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: &[u8; 23] = b"background_thread:true\0";

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
    /// Write every stored record as JSON lines (stop the gateway first:
    /// the store is locked while it runs).
    Export {
        #[arg(long, default_value = "gateway.toml")]
        config: PathBuf,
        /// Output file; `-` or none: standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Restore a dump written by `export` into the configured store, all
    /// or nothing.
    Import {
        #[arg(long, default_value = "gateway.toml")]
        config: PathBuf,
        /// The dump; `-`: standard input.
        #[arg(long)]
        input: PathBuf,
        /// Import even if the store already holds records (they stay,
        /// records with the same keys are replaced).
        #[arg(long)]
        force: bool,
    },
    /// Exit 0 if the running gateway's /healthz answers 200 (for Docker's
    /// HEALTHCHECK; no curl needed in the image).
    Healthcheck {
        #[arg(long, default_value = "gateway.toml")]
        config: PathBuf,
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
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
        Some(Command::Export { config, output }) => export(&config, output),
        Some(Command::Import {
            config,
            input,
            force,
        }) => import(&config, &input, force),
        Some(Command::Healthcheck { config, timeout_ms }) => healthcheck(&config, timeout_ms),
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
                // One line naming the path and the fault; the status says
                // which kind (docs/operations.md, "Exit status").
                eprintln!("{e}");
                return ExitCode::from(e.exit_code());
            }
        };
        for (proto, addr) in server.transport.local_addrs() {
            tracing::info!(%proto, %addr, "SIP listening");
            say(&format!(
                "SIP listening: {}:{addr}",
                proto.via_token().to_ascii_lowercase()
            ));
        }
        say(&format!("CPIM HTTP listening: {}", server.http));
        // The handlers first: a SIGTERM right after "serving" (a script, an
        // orchestrator) must stop the gateway cleanly, not kill it.
        let stop = stop_signal();
        say("serving; SIGINT or SIGTERM stops");
        stop.await;
        tracing::info!("shutting down");
        server.shutdown(std::time::Duration::from_secs(5)).await;
        say("stopped: store flushed");
        ExitCode::SUCCESS
    })
}

/// `[log]`: the level filter from the file unless `RUST_LOG` is set, text
/// or JSON lines on stderr (stdout carries the startup lines scripts read).
fn init_logging(log: &sip_cpim_gateway::config::LogConfig) {
    use tracing_subscriber::EnvFilter;
    // An empty RUST_LOG counts as unset (it would silence everything).
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| EnvFilter::builder().parse(v).ok())
        .or_else(|| EnvFilter::builder().parse(&log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    // Colour only on a terminal: collected logs (docker logs, journald,
    // files) get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
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

/// A status line on stdout for scripts and operators. A closed stdout
/// (the reader went away) must not stop the gateway, so errors are ignored
/// rather than panicking as `println!` would.
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|_| out.flush());
}

/// SIGINT or SIGTERM, with the handlers registered when this is called
/// (not when the future is first polled).
fn stop_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Why `export`/`import` failed: the message and the exit status.
struct Failed(u8, String);

impl From<String> for Failed {
    fn from(m: String) -> Self {
        Failed(1, m)
    }
}

impl From<OpenError> for Failed {
    fn from(e: OpenError) -> Self {
        let code = e.exit_code();
        let hint = if matches!(e, OpenError::Io { .. }) {
            " (is the gateway still running?)"
        } else {
            ""
        };
        Failed(code, format!("{e}{hint}"))
    }
}

/// Opens the configured store for `export`/`import` (a current-thread
/// runtime: the store's committer is a task), checked as a start checks it
/// (`recovery.rs`). `import` is how a damaged store is replaced, so it
/// opens as with `start_after_corruption`: a damaged store is moved aside
/// and the dump restored into a new one.
fn with_store<T>(
    config: &std::path::Path,
    create: bool,
    f: impl AsyncFnOnce(&SledStore) -> Result<T, String>,
) -> Result<T, Failed> {
    let mut cfg = Config::load(config).map_err(|e| e.to_string())?;
    // Warnings and errors (a store moved aside) reach stderr; the routine
    // lines of `run` do not clutter a one-shot command's output.
    cfg.log.level = "warn".into();
    init_logging(&cfg.log);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async {
        let path = std::path::Path::new(&cfg.store.path);
        if !create && !path.exists() {
            return Err(format!("no store at {}", path.display()).into());
        }
        let mut opts = cfg.store.open_options();
        opts.start_after_corruption |= create;
        let store = sip_cpim_gateway::recovery::open_store(path, opts).await?;
        let r = f(&store).await;
        store.close().await.map_err(|e| e.to_string())?;
        let r = r?;
        if create {
            // sled replays, on its next open, the whole log a restore wrote
            // (hundreds of megabytes for a large dump) before it writes a
            // snapshot. Open once more here, so that the import pays for
            // that and the gateway's first start after it is as fast as
            // after a clean stop.
            let store = sip_cpim_gateway::recovery::open_store(path, opts).await?;
            store.close().await.map_err(|e| e.to_string())?;
        }
        Ok(r)
    })
}

fn export(config: &std::path::Path, output: Option<PathBuf>) -> ExitCode {
    let r = with_store(config, false, async |store| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let mut out: Box<dyn std::io::Write> = match output.as_deref() {
            None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            Some(p) if p.as_os_str() == "-" => {
                Box::new(std::io::BufWriter::new(std::io::stdout().lock()))
            }
            Some(p) => Box::new(std::io::BufWriter::new(
                std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?,
            )),
        };
        backup::export(store, now, &mut out).map_err(|e| e.to_string())
    });
    match r {
        Ok(n) => {
            eprintln!("exported {n} records");
            ExitCode::SUCCESS
        }
        Err(Failed(code, e)) => {
            eprintln!("export failed: {e}");
            ExitCode::from(code)
        }
    }
}

fn import(config: &std::path::Path, input: &std::path::Path, force: bool) -> ExitCode {
    let r = with_store(config, true, async |store| {
        let mut reader: Box<dyn std::io::BufRead> = if input.as_os_str() == "-" {
            Box::new(std::io::BufReader::new(std::io::stdin().lock()))
        } else {
            Box::new(std::io::BufReader::new(
                std::fs::File::open(input).map_err(|e| format!("{}: {e}", input.display()))?,
            ))
        };
        backup::import(store, &mut reader, force)
            .await
            .map_err(|e| e.to_string())
    });
    match r {
        Ok(n) => {
            eprintln!("imported {n} records");
            ExitCode::SUCCESS
        }
        Err(Failed(code, e)) => {
            eprintln!("import failed: {e}");
            ExitCode::from(code)
        }
    }
}

/// GET /healthz on the configured HTTP listener (an unspecified address
/// means this host's loopback).
fn healthcheck(config: &std::path::Path, timeout_ms: u64) -> ExitCode {
    use std::io::{Read, Write};
    let probe = || -> Result<String, String> {
        let cfg = Config::load(config).map_err(|e| e.to_string())?;
        let mut addr: std::net::SocketAddr = cfg
            .cpim
            .listen
            .parse()
            .map_err(|e| format!("cpim.listen: {e}"))?;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let t = std::time::Duration::from_millis(timeout_ms);
        let mut c =
            std::net::TcpStream::connect_timeout(&addr, t).map_err(|e| format!("{addr}: {e}"))?;
        c.set_read_timeout(Some(t)).map_err(|e| e.to_string())?;
        c.set_write_timeout(Some(t)).map_err(|e| e.to_string())?;
        write!(
            c,
            "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .map_err(|e| e.to_string())?;
        let mut answer = String::new();
        c.take(4096)
            .read_to_string(&mut answer)
            .map_err(|e| e.to_string())?;
        Ok(answer.lines().next().unwrap_or("").to_owned())
    };
    match probe() {
        Ok(status) if status.split_whitespace().nth(1) == Some("200") => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("unhealthy: {status}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("unhealthy: {e}");
            ExitCode::FAILURE
        }
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
