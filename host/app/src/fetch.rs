//! Fetch on miss and refresh now: a client's read of a person the store
//! does not hold (or its `refresh`) asks the registers at once. Every
//! installed connector whose release looks up the ID's scheme is asked,
//! past the cache, in a lookup run recorded (with its register calls in
//! the cost ledger) under the job `fetch:CLIENT`.
//!
//! Reads of the same person at the same moment share one lookup: the
//! first starts it in a task of its own, the others wait for its outcome;
//! a reader that stops waiting (its deadline) does not stop the lookup,
//! so a read a moment later finds the person stored. A person found is
//! followed for every client that asked (`follow.scope = "followed"`
//! keeps them for as long as the client does).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use folkhub_api::{FetchError, Fetched, Fetcher};
use folkhub_core::PersonId;
use folkhub_store::{Follows, Installations};
use tokio::sync::watch;

use crate::host::Host;
use crate::sync::{Mode, run_as};

type Outcome = Option<Result<Fetched, FetchError>>;

/// A lookup under way: its outcome to come, and the clients waiting for it.
type UnderWay = (watch::Receiver<Outcome>, Vec<String>);

/// The application's [`Fetcher`].
pub struct Fetch {
    host: Host,
    /// Lookups under way, by the ID's normalised value.
    running: Arc<Mutex<HashMap<String, UnderWay>>>,
}

impl Fetch {
    pub fn new(host: Host) -> Fetch {
        Fetch {
            host,
            running: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

#[async_trait::async_trait]
impl Fetcher for Fetch {
    async fn fetch(&self, id: &PersonId, client: &str) -> Result<Fetched, FetchError> {
        let mut outcome = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            match running.get_mut(&id.value) {
                Some((under_way, clients)) => {
                    clients.push(client.to_string());
                    under_way.clone()
                }
                None => {
                    let (tell, outcome) = watch::channel(None);
                    running.insert(
                        id.value.clone(),
                        (outcome.clone(), vec![client.to_string()]),
                    );
                    let (host, id, client) = (self.host.clone(), id.clone(), client.to_string());
                    let running = self.running.clone();
                    tokio::spawn(async move {
                        let result = lookup(&host, &id, &client).await;
                        let clients = running
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&id.value)
                            .map(|(_, clients)| clients)
                            .unwrap_or_default();
                        // Found: every client that asked follows the person
                        // now (a reader past its deadline too).
                        if let Ok(Fetched { found: true, .. }) = &result {
                            follow(&host, &id, &clients).await;
                        }
                        let _ = tell.send(Some(result));
                    });
                    outcome
                }
            }
        };
        let done = outcome.wait_for(Option::is_some).await.map_err(|_| {
            FetchError::Unavailable("the lookup task ended without an outcome".into())
        })?;
        done.clone()
            .unwrap_or_else(|| Err(FetchError::Unavailable("no outcome".into())))
    }

    async fn search(
        &self,
        query: &folkhub_core::contract::SearchQuery,
        client: &str,
    ) -> Result<folkhub_api::Searched, FetchError> {
        crate::search::search(&self.host, query, client).await
    }
}

/// Adds a fetched person to the follow set of each client that asked.
async fn follow(host: &Host, id: &PersonId, clients: &[String]) {
    let member = folkhub_store::FollowId {
        scheme: id.scheme.as_str().into(),
        value: id.value.clone(),
    };
    for client in clients {
        let set = folkhub_store::FollowSet::Client(client.clone());
        if let Err(e) = host
            .store
            .follow(&set, std::slice::from_ref(&member), client)
            .await
        {
            tracing::warn!(client, "the fetched person is not followed: {e}");
        }
    }
}

/// Asks every installed connector that looks up `id`'s scheme.
async fn lookup(host: &Host, id: &PersonId, client: &str) -> Result<Fetched, FetchError> {
    let manifest = host.manifest();
    let installed = host
        .store
        .installations()
        .await
        .map_err(|e| FetchError::Unavailable(format!("store: {e}")))?;
    let serving: Vec<String> = installed
        .iter()
        .filter(|i| {
            manifest
                .find(&i.connector, Some(&i.version))
                .is_some_and(|r| r.id_schemes.iter().any(|s| s == id.scheme.as_str()))
        })
        .map(|i| i.connector.clone())
        .collect();
    if serving.is_empty() {
        return Err(FetchError::NoConnector(id.scheme.to_string()));
    }
    let job = format!("fetch:{client}");
    let mut fetched = Fetched {
        asked: Vec::new(),
        found: false,
    };
    let (mut failures, mut spent) = (Vec::new(), Vec::new());
    for connector in serving {
        match host.budget(&connector).await {
            Ok(Some(budget)) if budget.stop => {
                spent.push(format!("{connector}: {}", budget.message));
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                failures.push(format!("{connector}: {e:#}"));
                continue;
            }
        }
        fetched.asked.push(connector.clone());
        match run_as(
            host,
            &connector,
            Mode::Fresh(vec![id.value.clone()]),
            None,
            Some(&job),
        )
        .await
        {
            Ok(summary) => {
                // `fetched` counts the persons the register answered for.
                fetched.found |= summary.counts.fetched > 0;
                if summary.counts.errors > 0 {
                    failures.push(format!("{connector}: {}", summary.errors.join("; ")));
                }
            }
            Err(e) => failures.push(format!("{connector}: {e:#}")),
        }
    }
    if fetched.found {
        return Ok(fetched);
    }
    if fetched.asked.is_empty() && !spent.is_empty() {
        return Err(FetchError::OverBudget(spent.join("; ")));
    }
    if !failures.is_empty() {
        return Err(FetchError::Unavailable(failures.join("; ")));
    }
    Ok(fetched)
}
