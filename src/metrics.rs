//! Prometheus metrics: channels, pushes, push lag, delivery margin (I1 as a number),
//! revocations, reuse detections, refresh outcomes.

use std::sync::atomic::{AtomicI64, Ordering};

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric, registered in one registry.
pub struct Metrics {
    registry: Registry,
    pub channels: IntGaugeVec,
    pub pushes: IntCounterVec,
    pub push_lag: Histogram,
    pub delivery_margin: Histogram,
    /// Smallest delivery margin seen, in ms: must stay above 0.
    pub min_margin_ms: IntGauge,
    pub revocations: IntCounterVec,
    pub reuse_detected: IntCounter,
    pub refreshes: IntCounterVec,
    pub logins: IntCounterVec,
    pub channels_closed: IntCounterVec,
    /// Tokens written while the access token the client held had already expired (I1 broken).
    pub margin_breaches: IntCounter,
    /// First pushes to clients that came back after their access token expired: not breaches.
    pub resumes_after_expiry: IntCounter,
    /// Open client connections (every kind), against `--max-connections`.
    pub connections_open: IntGauge,
    /// Connections answered 503 at accept because `--max-connections` were open.
    pub connections_refused: IntCounter,
    min_seen: AtomicI64,
}

/// A held expiry meaning "the client's access token had expired before its channel opened".
pub const HELD_EXPIRED: i64 = -1;

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: T) -> T {
    r.register(Box::new(m.clone()))
        .expect("metric names are unique");
    m
}

impl Default for Metrics {
    fn default() -> Self {
        let r = Registry::new();
        let lag_buckets = vec![
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        let margin_buckets = vec![
            -60.0, -10.0, -1.0, 0.0, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
        ];
        Metrics {
            channels: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("tokenpush_channels", "Live channels by kind"),
                    &["kind"],
                )
                .unwrap(),
            ),
            pushes: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("tokenpush_pushes_total", "Token pushes by reason"),
                    &["reason"],
                )
                .unwrap(),
            ),
            push_lag: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "tokenpush_push_lag_seconds",
                        "Renewal deadline to tokens written",
                    )
                    .buckets(lag_buckets),
                )
                .unwrap(),
            ),
            delivery_margin: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "tokenpush_delivery_margin_seconds",
                        "Access lifetime left on the token the client held when a push was written (negative: a breach)",
                    )
                    .buckets(margin_buckets),
                )
                .unwrap(),
            ),
            min_margin_ms: reg(
                &r,
                IntGauge::new(
                    "tokenpush_delivery_margin_min_ms",
                    "Smallest delivery margin seen (may be negative; 0 until the first sample)",
                )
                .unwrap(),
            ),
            revocations: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("tokenpush_revocations_total", "Sessions revoked by reason"),
                    &["reason"],
                )
                .unwrap(),
            ),
            reuse_detected: reg(
                &r,
                IntCounter::new("tokenpush_reuse_detected_total", "Replayed refresh tokens")
                    .unwrap(),
            ),
            refreshes: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("tokenpush_refresh_total", "Refresh outcomes"),
                    &["outcome"],
                )
                .unwrap(),
            ),
            logins: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("tokenpush_logins_total", "Login outcomes"),
                    &["outcome"],
                )
                .unwrap(),
            ),
            channels_closed: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "tokenpush_channels_closed_total",
                        "Channels closed by cause",
                    ),
                    &["cause"],
                )
                .unwrap(),
            ),
            margin_breaches: reg(
                &r,
                IntCounter::new(
                    "tokenpush_delivery_margin_breaches_total",
                    "Tokens written after the access token the client held had expired",
                )
                .unwrap(),
            ),
            resumes_after_expiry: reg(
                &r,
                IntCounter::new(
                    "tokenpush_resumes_after_expiry_total",
                    "First pushes to clients that came back after their access token expired",
                )
                .unwrap(),
            ),
            connections_open: reg(
                &r,
                IntGauge::new(
                    "tokenpush_connections_open",
                    "Open client connections of every kind",
                )
                .unwrap(),
            ),
            connections_refused: reg(
                &r,
                IntCounter::new(
                    "tokenpush_connections_refused_total",
                    "Connections answered 503 at accept because --max-connections were open",
                )
                .unwrap(),
            ),
            min_seen: AtomicI64::new(i64::MAX),
            registry: r,
        }
    }
}

impl Metrics {
    /// Records a `tokens` event written to a channel at `now`: lag from its deadline, and the
    /// margin left on the access token the client held (`held_exp_ms`: 0 if unknown,
    /// [`HELD_EXPIRED`] for a client that came back after its token expired). Negative margins
    /// are recorded as they are: they are breaches of I1.
    pub fn written(&self, deadline_ms: i64, held_exp_ms: i64, now: i64) {
        self.push_lag
            .observe(((now - deadline_ms).max(0)) as f64 / 1000.0);
        if held_exp_ms == HELD_EXPIRED {
            self.resumes_after_expiry.inc();
        } else if held_exp_ms > 0 {
            let margin = held_exp_ms - now;
            self.delivery_margin.observe(margin as f64 / 1000.0);
            if margin < 0 {
                self.margin_breaches.inc();
            }
            let min = self
                .min_seen
                .fetch_min(margin, Ordering::Relaxed)
                .min(margin);
            self.min_margin_ms.set(min);
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
