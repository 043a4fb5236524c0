//! Prometheus metrics (`GET /metrics`, text exposition format 0.0.4):
//! requests by route, method and status, a latency histogram per route,
//! access-log entries, refused authentications and rate-limited requests,
//! and gauges read at scrape time (persons, open circuit breakers, days
//! left to upgrade deadlines).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::{ApiError, ApiState};

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    access_log_entries: AtomicU64,
    access_log_failures: AtomicU64,
    auth_failures: AtomicU64,
    rate_limited: Mutex<BTreeMap<String, u64>>,
}

impl Metrics {
    pub(crate) fn logged(&self, entries: usize) {
        self.access_log_entries
            .fetch_add(entries as u64, Ordering::Relaxed);
    }

    pub(crate) fn log_failed(&self, entries: usize) {
        self.access_log_failures
            .fetch_add(entries as u64, Ordering::Relaxed);
    }

    pub(crate) fn auth_failed(&self) {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rate_limited(&self, client: &str) {
        *self
            .rate_limited
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(client.to_string())
            .or_default() += 1;
    }

    fn observe(&self, route: &str, method: &str, status: u16, seconds: f64) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((route.to_string(), method.to_string(), status))
            .or_default() += 1;
        let mut latency = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        let h = latency.entry(route.to_string()).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.counts[i] += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
    }

    /// The counters in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP folkhub_http_requests_total HTTP requests answered, by route template, method and status.\n# TYPE folkhub_http_requests_total counter"
        );
        for ((route, method, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "folkhub_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        let _ = writeln!(
            out,
            "# HELP folkhub_http_request_duration_seconds Time to answer, by route template.\n# TYPE folkhub_http_request_duration_seconds histogram"
        );
        for (route, h) in self
            .latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let route = escape(route);
            for (bound, n) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    out,
                    "folkhub_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "folkhub_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}\nfolkhub_http_request_duration_seconds_sum{{route=\"{route}\"}} {}\nfolkhub_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count, h.sum, h.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP folkhub_access_log_entries_total Person reads written to the access log.\n# TYPE folkhub_access_log_entries_total counter\nfolkhub_access_log_entries_total {}",
            self.access_log_entries.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP folkhub_access_log_failures_total Access-log entries a commit failed to write (buffered mode; in the default mode their requests were refused).\n# TYPE folkhub_access_log_failures_total counter\nfolkhub_access_log_failures_total {}",
            self.access_log_failures.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP folkhub_auth_failures_total Requests refused for an unknown, revoked or misused secret.\n# TYPE folkhub_auth_failures_total counter\nfolkhub_auth_failures_total {}",
            self.auth_failures.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP folkhub_rate_limited_total Requests refused by a client's rate limit.\n# TYPE folkhub_rate_limited_total counter"
        );
        for (client, n) in self
            .rate_limited
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "folkhub_rate_limited_total{{client=\"{}\"}} {n}",
                escape(client)
            );
        }
        out
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Middleware: counts and times every answer.
pub async fn record(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().to_string();
    let start = Instant::now();
    let response = next.run(request).await;
    metrics.observe(
        &route,
        &method,
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    response
}

/// `GET /metrics`: for admin clients on the API's listener, for anyone
/// who reaches `server.admin_listen`.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain", body = String),
        (status = 500, description = "The store cannot be read", body = crate::openapi::ErrorBody),
        crate::openapi::ClientErrors), security(("api_key" = []), ("bearer" = [])))]
pub async fn serve_metrics(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let mut out = state.metrics.render();
    let persons = state
        .store
        .count_persons()
        .await
        .map_err(ApiError::internal)?;
    let _ = writeln!(
        out,
        "# HELP folkhub_persons Persons in the store.\n# TYPE folkhub_persons gauge\nfolkhub_persons {persons}"
    );
    let _ = writeln!(
        out,
        "# HELP folkhub_connector_breaker_open 1 while a connector's circuit breaker is open.\n# TYPE folkhub_connector_breaker_open gauge"
    );
    let connectors = state.connectors().await?;
    for c in &connectors {
        let _ = writeln!(
            out,
            "folkhub_connector_breaker_open{{connector=\"{}\"}} {}",
            escape(&c.id),
            u8::from(c.breaker_open)
        );
    }
    let _ = writeln!(
        out,
        "# HELP folkhub_connector_upgrade_days_left Days until an installed connector's upgrade deadline (negative: passed).\n# TYPE folkhub_connector_upgrade_days_left gauge"
    );
    for c in &connectors {
        if let Some(u) = &c.upgrade {
            let _ = writeln!(
                out,
                "folkhub_connector_upgrade_days_left{{connector=\"{}\",to=\"{}\"}} {}",
                escape(&c.id),
                escape(&u.to),
                u.days_left
            );
        }
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}
