//! `folkhub-sim`: serve the register simulators, or print the ground truth.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use folkhub_sim::{Client, Config, Population, Simulator};
use rsa::pkcs8::DecodePublicKey;

#[derive(Parser)]
#[command(
    name = "folkhub-sim",
    about = "Simulators of the Nordic population registers over a synthetic population"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve Folkeregisteret and the Maskinporten token endpoint on one port.
    Serve {
        #[arg(long, default_value = "127.0.0.1:18081")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 2000)]
        count: usize,
        /// Changes applied before serving.
        #[arg(long, default_value_t = 0)]
        changes: u64,
        /// Trust a client: `CLIENT_ID=PUBLIC_KEY.pem` (scopes: Folkeregisteret offentlig med hjemmel, KRR contact and mailbox).
        #[arg(long = "trust-client")]
        trust_client: Vec<String>,
        /// Apply one change every this many seconds (0: never).
        #[arg(long, default_value_t = 0)]
        change_every: u64,
    },
    /// Print the `[connectors.*]` sections of a folkhub.toml that use this simulator.
    HostConfig {
        /// Base URL the simulator serves on, e.g. http://127.0.0.1:18081.
        #[arg(long)]
        url: String,
        #[arg(long)]
        client_id: String,
        /// The Maskinporten private key the host signs grants with.
        #[arg(long)]
        key_file: PathBuf,
    },
    /// Print the ground truth as JSON lines: every ID and the canonical field values.
    Population {
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 2000)]
        count: usize,
        #[arg(long, default_value_t = 0)]
        changes: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    match Cli::parse().command {
        Command::HostConfig {
            url,
            client_id,
            key_file,
        } => {
            print!(
                "{}",
                folkhub_sim::host_config(url.trim_end_matches('/'), &client_id, &key_file)
            );
        }
        Command::Population {
            seed,
            count,
            changes,
        } => {
            let mut population = Population::generate(seed, count);
            population.advance(changes);
            use std::io::Write;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for truth in population.truth() {
                writeln!(out, "{}", serde_json::to_string(&truth)?)?;
            }
            out.flush()?;
        }
        Command::Serve {
            listen,
            seed,
            count,
            changes,
            trust_client,
            change_every,
        } => {
            let mut clients = Vec::new();
            for spec in trust_client {
                let (id, path) = spec
                    .split_once('=')
                    .context("--trust-client takes CLIENT_ID=PUBLIC_KEY.pem")?;
                let pem = std::fs::read_to_string(PathBuf::from(path))
                    .with_context(|| format!("reading {path}"))?;
                let public_key = rsa::RsaPublicKey::from_public_key_pem(&pem)
                    .with_context(|| format!("{path} is not a PEM public key"))?;
                clients.push(Client {
                    client_id: id.to_string(),
                    public_key,
                    scopes: folkhub_sim::all_scopes(),
                });
            }
            let sim = Simulator::start(Config {
                seed,
                count,
                changes,
                clients,
                listen,
            })
            .await?;
            println!(
                "folkhub-sim serving on {} (seed {seed}, {count} persons)",
                sim.base_url()
            );
            println!(
                "  Folkeregisteret: {}{}",
                sim.base_url(),
                folkhub_sim::freg::BASE
            );
            println!("  KRR:             {}/rest/v1/personer", sim.base_url());
            println!("  token endpoint:  {}", sim.token_url());
            if change_every > 0 {
                let shared = sim.shared.clone();
                tokio::spawn(async move {
                    let mut tick =
                        tokio::time::interval(std::time::Duration::from_secs(change_every));
                    tick.tick().await;
                    loop {
                        tick.tick().await;
                        shared.population.write().await.advance(1);
                    }
                });
            }
            tokio::signal::ctrl_c().await?;
            sim.stop().await;
        }
    }
    Ok(())
}
