//! The `pgrouter` command: parse arguments, load and validate the config,
//! run. Nothing else lives here.

use anyhow_free::fail;
use clap::{Parser, Subcommand};
use pgrouter::app::Router;
use pgrouter::config::{Config, LogFormat};
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc, not glibc's malloc: every request boxes its ~2.4 kB future,
/// which glibc serves from its slow bins (~500 instructions per
/// allocation and free, measured under callgrind) and mimalloc from a
/// per-thread free list.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "pgrouter",
    version,
    about = "PostgreSQL transaction-mode pooler and read/write router"
)]
struct Cli {
    /// Path to router.toml.
    #[arg(
        short,
        long,
        global = true,
        default_value = "router.toml",
        env = "PGROUTER_CONFIG"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate the config and print the effective settings.
    Check,
    /// Start a throwaway primary + replicas and the router in front of them.
    Demo {
        #[arg(long, default_value_t = 2)]
        replicas: usize,
    },
    /// Read a password on stdin and print a SCRAM-SHA-256 verifier for router.toml.
    HashPassword,
}

mod anyhow_free {
    /// Prints an error and returns a failing exit code.
    pub fn fail(msg: impl std::fmt::Display) -> std::process::ExitCode {
        eprintln!("pgrouter: {msg}");
        std::process::ExitCode::from(1)
    }
}

/// Logs to stderr as text or JSON lines; RUST_LOG overrides the level.
fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("pgrouter={level},warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        // One JSON object per line; span fields (the client id) included.
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::Check) => match Config::load(&cli.config) {
            Ok(c) => {
                // The certificate and key must load, as at start.
                if let Err(e) = pgrouter::tls::acceptor(&c.tls) {
                    return fail(e);
                }
                // And the servers' CA files.
                let primary = pgrouter::backend::tls::ServerTls::new(
                    c.primary.tls,
                    c.primary.ca.as_deref(),
                    "primary",
                );
                if let Err(e) = primary {
                    return fail(e);
                }
                for (i, r) in c.replicas.iter().enumerate() {
                    if let Err(e) = pgrouter::app::replica_tls(i, r) {
                        return fail(e);
                    }
                }
                for w in c.warnings() {
                    eprintln!("warning: {w}");
                }
                println!("# {} is valid; effective settings:\n", cli.config.display());
                print!("{}", c.to_redacted_toml());
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Some(Cmd::HashPassword) => {
            let mut line = String::new();
            if let Err(e) = std::io::stdin().read_line(&mut line) {
                return fail(e);
            }
            let pw = line.trim_end_matches(['\n', '\r']);
            println!(
                "{}",
                postgres_protocol::password::scram_sha_256(pw.as_bytes())
            );
            ExitCode::SUCCESS
        }
        Some(Cmd::Demo { replicas }) => {
            init_logging("warn", LogFormat::Text);
            run_async(async move {
                pgrouter::demo::run(replicas)
                    .await
                    .map_err(|e| e.to_string())
            })
        }
        None => {
            let config = match Config::load(&cli.config) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            init_logging(&config.server.log_level, config.server.log_format);
            run_async(serve(config))
        }
    }
}

fn run_async(fut: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    // Sessions run on their own per-core workers (frontend::workers); this
    // runtime only accepts connections, serves HTTP and runs the demo.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start runtime: {e}")),
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

async fn serve(config: Config) -> Result<(), String> {
    let timeout = config.server.shutdown_timeout.get();
    let router = Router::start(config).await.map_err(|e| e.to_string())?;
    tokio::spawn(pgrouter::reload::on_sighup(router.shared.clone()));
    tokio::select! {
        _ = pgrouter::shutdown::signalled() => {}
        _ = router.shared.shutdown.wait() => {}
    }
    tracing::info!("shutting down: draining clients for up to {timeout:?}");
    router.shutdown();
    if !router.drain(timeout).await {
        tracing::warn!("shutdown_timeout reached with clients still connected; closing them");
    }
    Ok(())
}
