//! API clients: who may read, on which legal basis, for what purpose.

use anyhow::{Context, bail};
use folkhub_store::{Access, Client, ClientAuth, NewClient};

use crate::host::Host;

/// What `clients add` needs.
pub struct AddClient<'a> {
    pub name: &'a str,
    pub basis: &'a str,
    pub purpose: &'a str,
    pub auth: &'a str,
    /// oauth2: the issuer's name and the client id in its tokens.
    pub oauth2: Option<(&'a str, &'a str)>,
    pub admin: bool,
    pub rate: u32,
    pub persons_per_minute: u32,
    /// It may have the registers asked about a person now.
    pub may_fetch: bool,
}

/// Checks and registers a client. Returns it with its secret (to show
/// once: only its hash is stored; none for an OAuth2 client, whose issuer
/// gives it tokens).
pub async fn add(
    host: &Host,
    new: AddClient<'_>,
    actor: &str,
) -> anyhow::Result<(Client, Option<String>)> {
    let name = new.name.trim();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        bail!("client name {name:?}: use letters, digits, `-`, `_` and `.` (e.g. school-oslo)");
    }
    let bases = host.config.legal_bases();
    if !bases.contains_key(new.basis) {
        bail!(
            "--basis {:?} is not a legal basis; use one of {} (or define one in [legal_bases] of folkhub.toml)",
            new.basis,
            bases.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if new.purpose.trim().len() < 3 {
        bail!(
            "--purpose: say what the client reads person data for (it is written to the access log with every read)"
        );
    }
    let auth = ClientAuth::parse(new.auth)
        .with_context(|| format!("--auth {:?}: use api-key, bearer or oauth2", new.auth))?;
    let oauth2 = match (auth, new.oauth2) {
        (ClientAuth::OAuth2, Some((issuer, client_id))) => {
            if !host.config.server.oauth2.iter().any(|i| i.name == issuer) {
                bail!(
                    "--issuer {issuer:?} is not an issuer of [[server.oauth2]] in folkhub.toml; \
                     configured: {}",
                    host.config
                        .server
                        .oauth2
                        .iter()
                        .map(|i| i.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            if client_id.trim().is_empty() {
                bail!("--client-id: the client id its tokens carry");
            }
            Some(ClientAuth::oauth2_subject(issuer, client_id.trim()))
        }
        (ClientAuth::OAuth2, None) => {
            bail!("--auth oauth2 needs --issuer NAME and --client-id ID (the token's client id)")
        }
        (_, Some(_)) => bail!("--issuer and --client-id are for --auth oauth2"),
        _ => None,
    };
    if new.rate == 0 {
        bail!("--rate must be at least 1 request per second");
    }
    if new.persons_per_minute == 0 {
        bail!("--persons-per-minute must be at least 1");
    }
    let secret = folkhub_api::auth::new_secret();
    let client = host
        .store
        .add_client(NewClient {
            name: name.to_string(),
            auth,
            secret_sha256: oauth2
                .clone()
                .unwrap_or_else(|| folkhub_api::auth::hash_secret(&secret)),
            basis: new.basis.to_string(),
            purpose: new.purpose.trim().to_string(),
            admin: new.admin,
            rate_limit: new.rate,
            persons_per_minute: new.persons_per_minute,
            may_fetch: new.may_fetch,
            created_by: actor.to_string(),
        })
        .await?;
    let secret = (client.auth != ClientAuth::OAuth2).then_some(secret);
    Ok((client, secret))
}
