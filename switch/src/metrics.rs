//! Metric names and the Prometheus recorder.
//!
//! Label values are bounded: bank *names* from config, MTI class digits,
//! response codes (2 characters), fixed reason words. Never a STAN, RRN,
//! account or proxy id.
//! Routing `source` and `result` values are fixed words.

use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Upstream requests answered, by `bank`, `class` (MTI class) and `code` (F39).
pub const REQUESTS: &str = "fps_switch_requests_total";
/// End-to-end latency of an upstream request, seconds, by `class`.
pub const REQUEST_SECONDS: &str = "fps_switch_request_duration_seconds";
/// Bank round trip, seconds, by `bank`.
pub const BANK_RTT_SECONDS: &str = "fps_switch_bank_round_trip_seconds";
/// Requests in flight from upstream.
pub const UPSTREAM_IN_FLIGHT: &str = "fps_switch_upstream_in_flight";
/// Open upstream connections.
pub const UPSTREAM_CONNECTIONS: &str = "fps_switch_upstream_connections";
/// Upstream connections refused, by `reason`.
pub const UPSTREAM_REFUSED: &str = "fps_switch_upstream_connections_refused_total";
/// Frames that could not be read, by `side` (`upstream`/`bank`) and `reason`.
pub const FRAME_ERRORS: &str = "fps_switch_frame_errors_total";
/// Requests in flight to a bank, by `bank`.
pub const BANK_IN_FLIGHT: &str = "fps_switch_bank_in_flight";
/// Open (signed-on) links, by `bank`.
pub const POOL_LINKS: &str = "fps_switch_bank_links";
/// Link (re)connect attempts, by `bank` and `result`.
pub const RECONNECTS: &str = "fps_switch_bank_connects_total";
/// Links the pool closed on purpose, by `bank` and `reason` (`idle`: quiet
/// for `pool.idle_close_ms` above `pool.min`; `shutdown`).
pub const LINKS_CLOSED: &str = "fps_switch_bank_links_closed_total";
/// Sign-offs (0800, F70 `002`) sent by closing links, by `bank` and `result`
/// (`approved`/`refused`/`no_answer`/`auth_failed`).
pub const SIGN_OFFS: &str = "fps_switch_bank_sign_offs_total";
/// Bank requests that hit their deadline, by `bank`.
pub const TIMEOUTS: &str = "fps_switch_bank_timeouts_total";
/// Bank answers that arrived with no one waiting, by `bank`.
pub const LATE_RESPONSES: &str = "fps_switch_bank_late_responses_total";
/// Requests a bank sent on a link the switch opened that are not network
/// management, answered `57`, by `bank` (banks originate on `[bank_inbound]`).
pub const BANK_UNSOLICITED: &str = "fps_switch_bank_unsolicited_requests_total";
/// Send failures, by `bank` and `kind` (`not_sent`/`outcome_unknown`/`rejected`).
pub const SEND_FAILURES: &str = "fps_switch_bank_send_failures_total";
/// Circuit breaker state per `bank` link: 0 closed, 1 open, 2 half-open.
pub const CIRCUIT_STATE: &str = "fps_switch_circuit_state";
/// Retries moved to another candidate link after a `NotSent` failure, by
/// `bank` (the link that failed).
pub const FAILOVERS: &str = "fps_switch_failovers_total";
/// Routing decisions, by `source` (`bank_code`/`proxy`/`bin`/`none`) and
/// `result` (`routed`/`unknown_destination`/`unavailable`).
pub const ROUTING: &str = "fps_switch_routing_total";
/// Entries in the proxy directory in force.
pub const PROXY_ENTRIES: &str = "fps_switch_proxy_directory_entries";
/// Proxy directory reloads, by `result` (`ok`/`error`).
pub const PROXY_RELOADS: &str = "fps_switch_proxy_directory_reloads_total";

/// Idempotency claims, by `result` (`new`/`duplicate`/`in_flight`/`mismatch`/`lookup`).
pub const IDEMPOTENCY: &str = "fps_switch_idempotency_total";
/// Idempotency keys held in memory.
pub const IDEMPOTENCY_KEYS: &str = "fps_switch_idempotency_keys";
/// Completed keys the key store could not queue (the journal still has them).
pub const KEYSTORE_DROPPED: &str = "fps_switch_keystore_dropped_total";
/// Journal writes that failed or were refused (requests answered 96).
pub const JOURNAL_REFUSED: &str = "fps_switch_journal_refused_total";
/// Reversal attempts and settlements, by `bank` and `result`
/// (`acknowledged`/`nothing_to_reverse`/`retry`/`parked`/`queue_full`).
pub const REVERSALS: &str = "fps_switch_reversals_total";
/// Items in a bank's reversal queue (active and parked), by `bank`.
pub const REVERSAL_QUEUE_DEPTH: &str = "fps_switch_reversal_queue_depth";
/// Parked reversals (manual queue), by `bank`.
pub const REVERSALS_PARKED: &str = "fps_switch_reversals_parked";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often recorded histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Buckets of every latency histogram (seconds): 50 µs to 30 s.
const LATENCY_BUCKETS: [f64; 18] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0,
];
/// Buckets of the journal's records per batch (a count, not a time).
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Histograms are exported with buckets (`_bucket{le=...}`), not as
/// summaries: a sample then costs a bucket increment at upkeep instead of a
/// quantile-sketch insert (a profile at 14,000 TPS showed 30 ms stretches of
/// sketch inserts on the switch's core), and buckets aggregate across
/// instances.
fn builder() -> PrometheusBuilder {
    let with_buckets = PrometheusBuilder::new()
        .set_buckets(&LATENCY_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(crate::journal::METRIC_BATCH_RECORDS.to_owned()),
                &BATCH_BUCKETS,
            )
        });
    // Only fails on an empty bucket list, which the constants are not.
    with_buckets.unwrap_or_else(|_| PrometheusBuilder::new())
}

/// The counters of one metric whose label values are static strings,
/// each series registered on its first count and kept. For counts made on
/// every request: `counter!` with a label builds a key and looks it up in
/// the registry each time (hashing, and an allocation for an owned label).
#[derive(Debug)]
pub(crate) struct CounterSet<const N: usize> {
    name: &'static str,
    keys: [&'static str; N],
    /// Few entries (the label values are a small fixed set): a linear scan.
    seen: Mutex<Vec<([&'static str; N], metrics::Counter)>>,
}

impl<const N: usize> CounterSet<N> {
    /// Counters of `name` labelled `keys`.
    pub(crate) const fn new(name: &'static str, keys: [&'static str; N]) -> Self {
        CounterSet {
            name,
            keys,
            seen: Mutex::new(Vec::new()),
        }
    }

    /// Add one to the series with label values `values`.
    pub(crate) fn increment(&self, values: [&'static str; N]) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, counter)) = seen.iter().find(|(v, _)| *v == values) {
            counter.increment(1);
            return;
        }
        let labels: Vec<metrics::Label> = self
            .keys
            .iter()
            .zip(values)
            .map(|(k, v)| metrics::Label::from_static_parts(k, v))
            .collect();
        let counter = metrics::counter!(self.name, labels);
        counter.increment(1);
        seen.push((values, counter));
    }
}

/// Install the Prometheus recorder as the process's `metrics` recorder (once
/// per process: later calls, e.g. several switches in one test binary, share
/// the first) and return a handle that renders the text exposition.
///
/// A thread of its own folds histogram samples into their buckets every
/// [`UPKEEP_EVERY`]. Without it they pile up until the next scrape: memory
/// grows without bound while nobody scrapes, and the scrape that finally
/// folds them (on the async runtime) stops it for as long as that takes.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = builder().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            let upkeep = handle.clone();
            // Lives as long as the process, like the recorder it serves.
            let spawned = std::thread::Builder::new()
                .name("fps-metrics".into())
                .spawn(move || {
                    crate::threads::run_in_background();
                    loop {
                        std::thread::sleep(UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start the metrics upkeep thread: histograms fold at scrapes only");
            }
            handle
        })
        .clone()
}

/// Key store puts refused because its queue was full (the journal still has
/// the key; the store's low-water mark is held below it until a restart).
pub const KEYSTORE_REFUSED: &str = "fps_switch_keystore_refused_total";
/// Key store batch commits that failed (each is retried with backoff).
pub const KEYSTORE_COMMIT_FAILURES: &str = "fps_switch_keystore_commit_failures_total";
/// Key store puts queued or being committed.
pub const KEYSTORE_PENDING: &str = "fps_switch_keystore_pending";
/// Journal lsns a restart would re-read to bring the key store up to date:
/// the journal's durable lsn minus the store's low-water mark. Grows without
/// bound while a refused put holds the mark.
pub const KEYSTORE_CATCH_UP_LSNS: &str = "fps_switch_keystore_catch_up_lsns";
/// Idempotency key store lookups, by how they were answered (`via`):
/// `pending` (a put not yet committed), `filter` (the membership filter
/// ruled the key out: no read), `store` (read from the file).
pub const KEYSTORE_LOOKUPS: &str = "fps_switch_keystore_lookups_total";
/// Memory held by the key store's membership filter, bytes.
pub const KEYSTORE_FILTER_BYTES: &str = "fps_switch_keystore_filter_bytes";
/// Completed keys re-put into the key store from the journal at start-up.
pub const KEYSTORE_CAUGHT_UP: &str = "fps_switch_keystore_caught_up_total";
/// Keys deleted from the key store by expiry (past the retention).
pub const KEYSTORE_EXPIRED: &str = "fps_switch_keystore_expired_total";
/// Keys in the key store's file, set after each expiry pass.
pub const KEYSTORE_KEYS: &str = "fps_switch_keystore_keys";

/// Bank server certificates the switch refused during the TLS handshake, by
/// `server_name` (the bank's configured `tls.server_name`, one per bank) and
/// `reason` (`unknown_ca`/`wrong_name`/`expired`/`not_yet_valid`/`revoked`/
/// `wrong_purpose`/`bad_certificate`/`tls_handshake`).
pub const BANK_TLS_REFUSED: &str = "fps_switch_bank_tls_refused_total";
/// Upstream connections closed, by `reason` (`peer_closed`/`read_error`/
/// `idle`/`bad_frame`/`undecodable`/`shutdown`).
pub const UPSTREAM_CLOSED: &str = "fps_switch_upstream_connections_closed_total";

/// Links banks opened to the switch that were refused, by `reason`: a TLS
/// verdict (`no_client_cert`/`unknown_ca`/`expired`/`not_yet_valid`/
/// `revoked`/`wrong_purpose`/`bad_certificate`/`tls_handshake`),
/// `handshake_timeout`, `max_connections`, or, for a certificate that
/// verifies, `unknown_identity` (names no configured bank),
/// `ambiguous_identity` (names several), `inbound_disabled` or
/// `bank_max_links`.
pub const BANK_INBOUND_REFUSED: &str = "fps_switch_bank_inbound_refused_total";
/// Open inbound links, by `bank`.
pub const BANK_INBOUND_LINKS: &str = "fps_switch_bank_inbound_links";
/// Inbound links closed, by `bank` and `reason` (as
/// `fps_switch_upstream_connections_closed_total`).
pub const BANK_INBOUND_CLOSED: &str = "fps_switch_bank_inbound_links_closed_total";
/// Requests received on inbound links, by `bank` and `class` (MTI class).
pub const BANK_INBOUND_REQUESTS: &str = "fps_switch_bank_inbound_requests_total";
/// Answers written on inbound links, by `bank` and `code` (F39; `63` for
/// a request whose MAC or signature failed).
pub const BANK_INBOUND_ANSWERS: &str = "fps_switch_bank_inbound_answers_total";
/// Requests in flight from banks' inbound links, by `bank`.
pub const BANK_INBOUND_IN_FLIGHT: &str = "fps_switch_bank_inbound_in_flight";
/// Tasks alive in the switch's runtime (connections, requests in flight,
/// link readers and writers, background loops), read at each scrape: after
/// load it returns to its idle level, so a leak of tasks shows here.
pub const RUNTIME_TASKS: &str = "fps_switch_runtime_tasks";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_set_counts_each_series_and_registers_it_once() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let set = CounterSet::new("fps_test_total", ["source", "result"]);
        metrics::with_local_recorder(&recorder, || {
            for _ in 0..3 {
                set.increment(["proxy", "routed"]);
            }
            set.increment(["bin", "routed"]);
        });
        let text = handle.render();
        assert!(
            text.contains("fps_test_total{source=\"proxy\",result=\"routed\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("fps_test_total{source=\"bin\",result=\"routed\"} 1"),
            "{text}"
        );
        assert_eq!(set.seen.lock().unwrap().len(), 2);
    }
}
