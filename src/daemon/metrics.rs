//! `GET /metrics`: the daemon's counters in the Prometheus (OpenMetrics) text format, for a lab
//! admin's Prometheus and the Grafana dashboard in `contrib/`.
//!
//! The counters themselves are [`Stats`]' plain atomics, bumped where things happen; this module
//! only reads them at scrape time, through the `prometheus-client` crate's encoder (a
//! [`Collector`]), so nothing on a request's path knows metrics exist. Who may scrape is who may
//! talk to the daemon at all: loopback and the allowlist. Like the status page, nothing here
//! names a file or a full peer address.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::daemon::stats::Stats;

/// What Prometheus expects for the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether a series only grows (a counter, `_total`) or goes up and down (a gauge).
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// Every series: its name (without `pacserved_` and `_total`), kind, help, and where its value is.
fn series(stats: &Stats) -> Vec<(&'static str, Kind, &'static str, &AtomicU64)> {
    use Kind::{Counter, Gauge};
    vec![
        (
            "queries",
            Counter,
            "Discovery queries received.",
            &stats.queries,
        ),
        (
            "answered_have",
            Counter,
            "Queries answered HAVE or GROWING.",
            &stats.answered_have,
        ),
        (
            "answered_miss",
            Counter,
            "Queries answered MISS.",
            &stats.answered_miss,
        ),
        (
            "quiet_unanswered",
            Counter,
            "QUIET queries for files not here: not answered.",
            &stats.quiet_unanswered,
        ),
        (
            "queries_repeated",
            Counter,
            "Copies of a query already answered in its newer version: dropped.",
            &stats.repeated,
        ),
        (
            "queries_dropped",
            Counter,
            "Malformed datagrams dropped.",
            &stats.dropped,
        ),
        (
            "queries_other_version",
            Counter,
            "Datagrams of other protocol versions.",
            &stats.other_versions,
        ),
        (
            "queries_rate_limited",
            Counter,
            "Queries over the rate limit.",
            &stats.rate_limited,
        ),
        (
            "files_served",
            Counter,
            "Files served to peers over HTTP.",
            &stats.files_served,
        ),
        (
            "served_bytes",
            Counter,
            "Body bytes the kernel took for peers.",
            &stats.bytes_served,
        ),
        (
            "served_growing",
            Counter,
            "Files served while still arriving here.",
            &stats.served_growing,
        ),
        (
            "not_found",
            Counter,
            "Requests for files this daemon does not have.",
            &stats.not_found,
        ),
        (
            "refused",
            Counter,
            "Connections from outside the allowlist.",
            &stats.refused,
        ),
        (
            "stalled_clients",
            Counter,
            "Connections closed: the client read nothing.",
            &stats.stalled_clients,
        ),
        (
            "no_slot",
            Counter,
            "Connections refused: no free slot.",
            &stats.no_slot,
        ),
        (
            "evicted",
            Counter,
            "Connections closed for a lighter source.",
            &stats.evicted,
        ),
        (
            "uploads",
            Gauge,
            "Files being sent right now.",
            &stats.uploading,
        ),
        (
            "followers",
            Gauge,
            "Peers reading a file still arriving here, right now.",
            &stats.followers,
        ),
        (
            "agent_fetches",
            Counter,
            "Mirror downloads made for local pacserve-fetch runs.",
            &stats.agent_fetches,
        ),
        (
            "agent_mirror_bytes",
            Counter,
            "Body bytes fetched from mirrors through the agent.",
            &stats.agent_mirror_bytes,
        ),
        (
            "agent_refused",
            Counter,
            "Agent jobs refused.",
            &stats.agent_refused,
        ),
        (
            "prefetch_hits",
            Counter,
            "Prefetched files handed to pacserve-fetch.",
            &stats.prefetch_hits,
        ),
        (
            "prefetch_bytes",
            Counter,
            "Bytes of prefetched files handed over.",
            &stats.prefetch_bytes,
        ),
        (
            "plans",
            Counter,
            "Transaction plans accepted.",
            &stats.plans,
        ),
        (
            "claims_led",
            Counter,
            "Shared downloads this daemon fetched from the mirror.",
            &stats.claims_led,
        ),
        (
            "claims_followed",
            Counter,
            "Shared downloads taken from another daemon's copy in progress.",
            &stats.claims_followed,
        ),
        (
            "claims_deferred",
            Counter,
            "Claims deferred to a better claimant.",
            &stats.claims_deferred,
        ),
        (
            "claims_made_way",
            Counter,
            "Files this daemon waited for another daemon to lead (making way).",
            &stats.claims_made_way,
        ),
        (
            "planned_files",
            Counter,
            "Files named by accepted plans.",
            &stats.planned_files,
        ),
        (
            "follow_failures",
            Counter,
            "Followed downloads that went back to the mirror.",
            &stats.follow_failures,
        ),
        (
            "received_bytes",
            Counter,
            "Package bytes this host's downloads got from LAN peers.",
            &stats.received_bytes,
        ),
        (
            "client_mirror_bytes",
            Counter,
            "Package bytes pacman's pacserve-fetch runs fetched from mirrors without the agent.",
            &stats.client_mirror_bytes,
        ),
        (
            "cache_lan",
            Counter,
            "Packages pacman got through /cache/ from a verified LAN copy.",
            &stats.cache_lan,
        ),
        (
            "cache_kept_alive",
            Counter,
            "/cache/ answers kept alive with the mirror's first bytes while the LAN copy arrived.",
            &stats.cache_kept_alive,
        ),
        (
            "cache_mirror_bytes",
            Counter,
            "Bytes of mirrors' copies sent by /cache/ to keep pacman's transfers alive.",
            &stats.cache_mirror_bytes,
        ),
        (
            "cache_cut",
            Counter,
            "/cache/ answers cut after they began (the LAN copy failed); pacman resumed from its mirror.",
            &stats.cache_cut,
        ),
        (
            "cache_ranges",
            Counter,
            "/cache/ answers to a Range request (pacman resuming a .part).",
            &stats.cache_ranges,
        ),
        (
            "cache_busy",
            Counter,
            "/cache/ requests answered 404 because every LAN fetch place was taken.",
            &stats.cache_busy,
        ),
    ]
}

/// The one labelled series: files from a peer that failed verification, by peer (shown as
/// the status page shows peers; at most `stats::MAX_LABELS` of them, the rest as `other`).
const VERIFICATION_FAILURES: (&str, &str) = (
    "peer_verification_failures",
    "Files from a peer that failed verification, by peer.",
);

#[derive(Debug)]
struct Scrape(Arc<Stats>);

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, kind, help, value) in series(&self.0) {
            let value = value.load(Relaxed);
            match kind {
                Kind::Counter => {
                    let counter = ConstCounter::new(value);
                    let metric =
                        encoder.encode_descriptor(name, help, None, counter.metric_type())?;
                    counter.encode(metric)?;
                }
                Kind::Gauge => {
                    let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
                    let metric =
                        encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
                    gauge.encode(metric)?;
                }
            }
        }
        let (name, help) = VERIFICATION_FAILURES;
        let failures = self.0.verification_failures.snapshot();
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (peer, count) in &failures {
            let labels = [("peer", peer.as_str())];
            ConstCounter::new(*count).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The exposition of `stats`, as `/metrics` answers it.
pub fn render(stats: &Arc<Stats>) -> String {
    let mut registry = Registry::with_prefix("pacserved");
    registry.register_collector(Box::new(Scrape(stats.clone())));
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_exposed_once_with_its_value() {
        let stats = Arc::new(Stats::default());
        Stats::add(&stats.agent_fetches, 3);
        Stats::add(&stats.planned_files, 7);
        stats.followers.store(2, Relaxed);
        let text = render(&stats);
        assert!(
            text.contains("\npacserved_agent_fetches_total 3\n"),
            "{text}"
        );
        assert!(
            text.contains("\npacserved_planned_files_total 7\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE pacserved_followers gauge\npacserved_followers 2\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        stats.verification_failures.add("fd00:1::/64".into(), 2);
        let text = render(&stats);
        assert!(
            text.contains("\npacserved_peer_verification_failures_total{peer=\"fd00:1::/64\"} 2\n"),
            "{text}"
        );
        let names: Vec<&str> = series(&stats).iter().map(|s| s.0).collect();
        for name in &names {
            assert_eq!(
                text.matches(&format!("# TYPE pacserved_{name} ")).count(),
                1,
                "{name}"
            );
        }
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "a series named twice");
    }
}
