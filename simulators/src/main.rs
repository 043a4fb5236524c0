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
    /// Serve every register simulator and the Maskinporten token endpoint.
    Serve {
        #[arg(long, default_value = "127.0.0.1:18081")]
        listen: SocketAddr,
        /// The mutual-TLS port (SPAR).
        #[arg(long, default_value = "127.0.0.1:18082")]
        listen_tls: SocketAddr,
        /// Where to write the throwaway CA and client certificate (a temporary directory if not set).
        #[arg(long)]
        pki_dir: Option<PathBuf>,
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
        /// Retire an upstream API version on a date: `krr-v1=2027-03-01`.
        /// After it, its endpoints answer 410 Gone.
        #[arg(long = "sunset")]
        sunset: Vec<String>,
    },
    /// Print the `[connectors.*]` sections of a folkhub.toml that use this simulator.
    HostConfig {
        /// Base URL the simulator serves on, e.g. http://127.0.0.1:18081.
        #[arg(long)]
        url: String,
        /// Base URL of its mutual-TLS port, e.g. https://127.0.0.1:18082.
        #[arg(long)]
        tls_url: String,
        /// The directory given to `serve --pki-dir`.
        #[arg(long)]
        pki_dir: PathBuf,
        #[arg(long)]
        client_id: String,
        /// The Maskinporten private key the host signs grants with.
        #[arg(long)]
        key_file: PathBuf,
    },
    /// Print the current ID of every person a register knows, one per line.
    Ids {
        /// `folkeregister`, `krr`, `spar` or `dvv`.
        #[arg(long)]
        register: String,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 2000)]
        count: usize,
        #[arg(long, default_value_t = 0)]
        changes: u64,
        /// Only Norwegians of these ages (`MIN-MAX` years on the
        /// simulator's day), e.g. pupils `6-19`.
        #[arg(long, value_name = "MIN-MAX")]
        ages: Option<String>,
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
            tls_url,
            pki_dir,
            client_id,
            key_file,
        } => {
            let at = folkhub_sim::Endpoints {
                url: url.trim_end_matches('/'),
                tls_url: tls_url.trim_end_matches('/'),
                pki_dir: &pki_dir,
            };
            print!("{}", folkhub_sim::host_config(&at, &client_id, &key_file));
        }
        Command::Ids {
            register,
            seed,
            count,
            changes,
            ages,
        } => {
            let mut population = Population::generate(seed, count);
            population.advance(changes);
            let ages = match ages.as_deref().map(|a| a.split_once('-')) {
                None => None,
                Some(Some((min, max))) => {
                    Some((min.trim().parse::<i32>()?, max.trim().parse::<i32>()?))
                }
                Some(None) => anyhow::bail!("--ages is MIN-MAX in years, e.g. 6-19"),
            };
            let today = folkhub_sim::population::today();
            let aged = |born: chrono::NaiveDate| {
                ages.is_none_or(|(min, max)| {
                    today
                        .years_since(born)
                        .is_some_and(|age| (min..=max).contains(&(age as i32)))
                })
            };
            let ids: Vec<String> = match register.as_str() {
                "folkeregister" | "krr" => population
                    .persons
                    .iter()
                    .filter(|p| aged(p.birth))
                    .map(|p| p.id().to_string())
                    .collect(),
                _ if ages.is_some() => {
                    anyhow::bail!("--ages picks Norwegians: use it with --register folkeregister")
                }
                "spar" => population
                    .swedes
                    .iter()
                    .map(|p| p.id().to_string())
                    .collect(),
                "dvv" => population
                    .finns
                    .iter()
                    .map(|p| p.id().to_string())
                    .collect(),
                other => {
                    anyhow::bail!("unknown register {other:?}: folkeregister, krr, spar or dvv")
                }
            };
            use std::io::Write;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for id in ids {
                writeln!(out, "{id}")?;
            }
            out.flush()?;
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
            listen_tls,
            pki_dir,
            seed,
            count,
            changes,
            trust_client,
            change_every,
            sunset,
        } => {
            let mut sunsets = Vec::new();
            for spec in sunset {
                let (api, date) = spec
                    .split_once('=')
                    .context("--sunset takes API=YYYY-MM-DD, e.g. krr-v1=2027-03-01")?;
                let date = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
                    .with_context(|| format!("--sunset {spec}: the date must be YYYY-MM-DD"))?;
                sunsets.push((api.to_string(), date));
            }
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
                listen_tls,
                pki_dir,
                sunsets,
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
            println!("  DVV VTJ query:   {}/dvv/vtjkysely", sim.base_url());
            println!("  DVV changes:     {}/dvv/api/v1/muutokset", sim.base_url());
            println!(
                "  SPAR (mTLS):     {}{}  (CA and client certificate in {})",
                sim.tls_url(),
                folkhub_sim::spar::PATH,
                sim.pki.dir.display()
            );
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
