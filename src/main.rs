//! The `dedup-gateway` binary: parse the command line, load configuration, set up logging, and
//! hand over to the library. Exit codes: 0 ok, 1 runtime failure, 2 invalid configuration or usage.

#![forbid(unsafe_code)]

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use dedup_gateway::config::{Config, DedupOverrides, Overrides, PolicyOverrides};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "dedup-gateway",
    version,
    about = "Deduplicating gateway from MinIO webhooks to OSCAR"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address, e.g. 0.0.0.0:8080.
    #[arg(long)]
    listen: Option<String>,
    /// OSCAR base URL.
    #[arg(long)]
    upstream: Option<String>,
    /// Directory for the spool and the dedup secret.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// sync, spool or shadow.
    #[arg(long)]
    mode: Option<String>,
    /// How long a delivered identity is remembered (e.g. 24h).
    #[arg(long)]
    dedup_ttl: Option<String>,
    /// How long a PENDING-marked record waits for a clean copy (e.g. 30s).
    #[arg(long)]
    pending_grace: Option<String>,
    /// json or text.
    #[arg(long)]
    log_format: Option<String>,
}

impl ServeArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen.clone(),
            upstream: self.upstream.clone(),
            data_dir: self.data_dir.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            mode: self.mode.clone(),
            log_format: self.log_format.clone(),
            dedup: self.dedup_ttl.clone().map(|ttl| DedupOverrides { ttl }),
            policy: self
                .pending_grace
                .clone()
                .map(|pending_grace| PolicyOverrides { pending_grace }),
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Validate and print the effective configuration (secrets masked).
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run captured payloads through the filter and dedup logic offline; one JSON verdict per record.
    Replay {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Service the payloads were sent to.
        #[arg(long, default_value = "replay")]
        service: String,
        /// Authorization header value the payloads came with (part of the identity).
        #[arg(
            long,
            env = "DEDUP_GATEWAY_REPLAY_AUTHORIZATION",
            hide_env_values = true
        )]
        authorization: Option<String>,
        /// Files with one JSON document each, or one per line.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the `mc` commands that wire a MinIO bucket to the gateway (the token stays in an env var).
    McSetup(McSetupArgs),
    /// One reconciliation pass over the service's bucket: a JSON line per version triggered, then a summary.
    Reconcile {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        service: String,
        /// Print what would be triggered; claim and send nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, clap::Args)]
struct McSetupArgs {
    /// OSCAR service name (the {service} of /job/{service}).
    #[arg(long)]
    service: String,
    /// Bucket whose events trigger the service.
    #[arg(long)]
    bucket: String,
    /// Gateway base URL as MinIO reaches it, e.g. http://dedup-gateway.oscar:8080.
    #[arg(long)]
    gateway_url: String,
    /// Environment variable that holds the OSCAR service token when the commands run.
    #[arg(long, default_value = "OSCAR_SERVICE_TOKEN")]
    token_env: String,
    /// mc alias of the MinIO server that emits the events.
    #[arg(long, default_value = "minio")]
    alias: String,
    /// replicated (trigger on replica events, remove put) or plain (trigger on put).
    #[arg(long, default_value = "plain")]
    scenario: dedup_gateway::mcsetup::Scenario,
    /// MinIO's persistent event queue (absolute path on the MinIO server).
    #[arg(long, default_value = "/data/minio-events")]
    queue_dir: String,
    /// Events MinIO keeps queued while the gateway is unreachable.
    #[arg(long, default_value_t = 100_000)]
    queue_limit: u64,
    /// Object-name prefix filter (OSCAR uses "<folder>/").
    #[arg(long, default_value = "")]
    prefix: String,
    /// Webhook target ID (default: the service name, as OSCAR names it).
    #[arg(long, default_value = "")]
    target_id: String,
    /// MinIO region as it appears in ARNs (usually empty).
    #[arg(long, default_value = "")]
    region: String,
    /// Also print the read-only S3 policy and user for `[services.NAME.reconcile]`.
    #[arg(long)]
    reconcile: bool,
}

impl McSetupArgs {
    fn options(self) -> dedup_gateway::mcsetup::McSetup {
        dedup_gateway::mcsetup::McSetup {
            service: self.service,
            bucket: self.bucket,
            gateway_url: self.gateway_url,
            token_env: self.token_env,
            alias: self.alias,
            scenario: self.scenario,
            queue_dir: self.queue_dir,
            queue_limit: self.queue_limit,
            prefix: self.prefix,
            target_id: self.target_id,
            region: self.region,
            reconcile: self.reconcile,
        }
    }
}

fn load(file: Option<&std::path::Path>, o: &Overrides) -> Result<Config, ExitCode> {
    Config::load(file, o).map_err(|e| {
        eprintln!("dedup-gateway: {e}");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Serve(args) => {
            let cfg = match load(args.config.as_deref(), &args.overrides()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let _log_flush = dedup_gateway::logging::init(cfg.log_format);
            serve(cfg)
        }
        Command::CheckConfig { config } => match load(config.as_deref(), &Overrides::default()) {
            Ok(cfg) => {
                print!("{}", cfg.masked_toml());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::McSetup(args) => match dedup_gateway::mcsetup::render(&args.options()) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("dedup-gateway: {e}");
                ExitCode::from(2)
            }
        },
        Command::Reconcile {
            config,
            service,
            dry_run,
        } => match load(config.as_deref(), &Overrides::default()) {
            Ok(cfg) => {
                let _log_flush = dedup_gateway::logging::init(cfg.log_format);
                reconcile(cfg, &service, dry_run)
            }
            Err(code) => code,
        },
        Command::Replay {
            config,
            service,
            authorization,
            files,
        } => replay(
            config.as_deref(),
            &service,
            authorization.as_deref(),
            &files,
        ),
    }
}

fn replay(
    config: Option<&std::path::Path>,
    service: &str,
    authorization: Option<&str>,
    files: &[PathBuf],
) -> ExitCode {
    let cfg = match load(config, &Overrides::default()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match dedup_gateway::replay::replay(&cfg, files, service, authorization, &mut out) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dedup-gateway: {e}");
            ExitCode::from(1)
        }
    }
}

fn reconcile(cfg: Config, service: &str, dry_run: bool) -> ExitCode {
    use dedup_gateway::reconcile::oneshot::{self, OneShotError};
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dedup-gateway: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let mut out = std::io::stdout();
    match rt.block_on(oneshot::run(cfg, service, dry_run, &mut out)) {
        Ok(r) if r.outcome == "ok" => ExitCode::SUCCESS,
        Ok(r) => {
            eprintln!(
                "dedup-gateway: reconciliation pass {}: {}",
                r.outcome,
                r.error.unwrap_or_default()
            );
            ExitCode::from(1)
        }
        Err(OneShotError::Usage(e)) => {
            eprintln!("dedup-gateway: {e}");
            ExitCode::from(2)
        }
        Err(OneShotError::Runtime(e)) => {
            eprintln!("dedup-gateway: {e}");
            ExitCode::from(1)
        }
    }
}

fn serve(cfg: Config) -> ExitCode {
    // One single-threaded runtime per worker, this thread's first (see `runtime`).
    let rt = match dedup_gateway::runtime::current_thread() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dedup-gateway: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let count = dedup_gateway::runtime::worker_count(cfg.http.workers);
    let workers = match dedup_gateway::runtime::Workers::start(rt.handle().clone(), count) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("dedup-gateway: cannot start the worker threads: {e}");
            return ExitCode::from(1);
        }
    };
    let hooks = dedup_gateway::Hooks {
        workers: workers.handles().to_vec(),
        ..Default::default()
    };
    let code = rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(cfg.listen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(listen = %cfg.listen, error = %e, "cannot bind");
                return ExitCode::from(1);
            }
        };
        let shutdown = CancellationToken::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            dedup_gateway::server::shutdown_signal().await;
            tracing::info!("shutdown requested; finishing in-flight requests");
            trigger.cancel();
        });
        match dedup_gateway::run_with_hooks(cfg, listener, shutdown, hooks).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(dedup_gateway::StartError::Config(e)) => {
                tracing::error!("{e}");
                ExitCode::from(2)
            }
            Err(e) => {
                tracing::error!(error = %e, "gateway failed");
                ExitCode::from(1)
            }
        }
    });
    workers.stop();
    code
}
