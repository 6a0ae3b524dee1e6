//! The `pinproxy` command: parse the command line, load the configuration, start tracing,
//! hand over to the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use pinproxy::config::{Config, Overrides};

#[derive(Parser)]
#[command(
    name = "pinproxy",
    version,
    about = "Pull-through proxy and content-pinning cache for OCI registries, npm and Maven"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Address to listen on, e.g. 127.0.0.1:5080.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// An OCI upstream as NAME=URL (repeatable). Replaces the configured list; the first
        /// one given is the default upstream.
        #[arg(long = "oci-upstream", value_name = "NAME=URL")]
        oci_upstream: Vec<String>,
        /// The npm registry to pull through (also PINPROXY_NPM_UPSTREAM), e.g.
        /// "$(npm config get registry)".
        #[arg(long = "npm-upstream", value_name = "URL")]
        npm_upstream: Option<String>,
        /// A Maven repository as NAME=URL (repeatable). Replaces the configured group; members
        /// are tried in the order given.
        #[arg(long = "maven-upstream", value_name = "NAME=URL")]
        maven_upstream: Vec<String>,
    },
    /// Check a configuration file and print the effective upstreams.
    CheckConfig {
        #[command(flatten)]
        common: Common,
    },
    /// Pins recorded by a running server.
    Pins {
        #[command(subcommand)]
        command: PinsCommand,
    },
    /// The pin journal.
    Journal {
        #[command(subcommand)]
        command: JournalCommand,
    },
}

#[derive(clap::Args)]
struct Common {
    /// Configuration file (TOML). Without it the built-in default is used.
    #[arg(long, env = "PINPROXY_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (content files, journal, index).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum PinsCommand {
    /// List every pin (asks the running server: its index is locked by that process).
    List {
        /// Base URL of the server, e.g. http://127.0.0.1:5080.
        #[arg(long, env = "PINPROXY_SERVER", default_value = "http://127.0.0.1:5080")]
        server: String,
        /// Read token, when the server requires one.
        #[arg(long, env = "PINPROXY_TOKEN")]
        token: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum JournalCommand {
    /// Check every record's checksum and the hash chain.
    Verify {
        #[command(flatten)]
        common: Common,
    },
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

fn load(
    common: &Common,
    listen: Option<SocketAddr>,
    oci_upstream: &[String],
    npm_upstream: Option<String>,
    maven_upstream: &[String],
) -> anyhow::Result<Config> {
    let pairs = |flag: &str, list: &[String]| -> anyhow::Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for u in list {
            let Some((name, url)) = u.split_once('=') else {
                bail!("{flag} `{u}`: expected NAME=URL");
            };
            out.push((name.to_owned(), url.to_owned()));
        }
        Ok(out)
    };
    let overrides = Overrides {
        listen,
        data_dir: common.data_dir.clone(),
        oci_upstreams: pairs("--oci-upstream", oci_upstream)?,
        npm_upstream,
        maven_upstreams: pairs("--maven-upstream", maven_upstream)?,
    };
    Ok(Config::load(common.config.as_deref(), &overrides, &env)?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PINPROXY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pinproxy: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[allow(clippy::print_stdout)]
fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            common,
            listen,
            oci_upstream,
            npm_upstream,
            maven_upstream,
        } => {
            let config = load(
                &common,
                listen,
                &oci_upstream,
                npm_upstream,
                &maven_upstream,
            )?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { common } => {
            let config = load(&common, None, &[], None, &[])?;
            println!("listen: {}", config.server.listen);
            println!("data_dir: {}", config.server.data_dir.display());
            for u in &config.oci.upstreams {
                let default = if u.name == config.oci.default_upstream {
                    " (default)"
                } else {
                    ""
                };
                println!("oci upstream {}{default}: {}", u.name, u.url);
            }
            for u in &config.maven.upstreams {
                println!("maven upstream {}: {}", u.name, u.url);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Journal {
            command: JournalCommand::Verify { common },
        } => {
            let config = load(&common, None, &[], None, &[])?;
            let path = config.server.data_dir.join("journal");
            let report = pinproxy::store::verify_journal(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            println!(
                "{}: {} records, last seq {}, head {}",
                path.display(),
                report.records,
                report.last_seq,
                report.last_hash
            );
            if report.problems.is_empty() {
                println!("ok: every checksum and every link of the hash chain verifies");
                Ok(ExitCode::SUCCESS)
            } else {
                for p in &report.problems {
                    println!("problem: {p}");
                }
                Ok(ExitCode::from(1))
            }
        }
        Command::Pins {
            command:
                PinsCommand::List {
                    server,
                    token,
                    json,
                },
        } => {
            let rt = tokio::runtime::Runtime::new()?;
            let body = rt.block_on(async {
                let url = format!("{}/api/v1/pins", server.trim_end_matches('/'));
                let mut req = reqwest::Client::new().get(&url);
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                let resp = req.send().await.with_context(|| {
                    format!("cannot reach {server}; is `pinproxy serve` running?")
                })?;
                let status = resp.status();
                let text = resp.text().await?;
                if !status.is_success() {
                    bail!("{url} answered {status}: {}", text.trim());
                }
                Ok(text)
            })?;
            if json {
                println!("{body}");
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<serde_json::Value> =
                serde_json::from_str(&body).context("the server sent no pin list")?;
            println!(
                "{:<24} {:<12} {:>12}  {:<10} COORDINATE",
                "TIME", "SHA256", "SIZE", "VERIFIED"
            );
            for r in &rows {
                let s = |k: &str| r[k].as_str().unwrap_or("").to_owned();
                println!(
                    "{:<24} {:<12} {:>12}  {:<10} {}",
                    s("time"),
                    s("sha256").get(..12).unwrap_or(""),
                    r["size"].as_u64().unwrap_or(0),
                    s("verified"),
                    s("coordinate")
                );
            }
            println!("{} pins", rows.len());
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = pinproxy::server::App::open(config).map_err(anyhow::Error::msg)?;
    let server = pinproxy::server::start(app)
        .await
        .map_err(anyhow::Error::msg)?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
    server.shutdown().await;
    Ok(())
}
