//! `GET /metrics` in Prometheus/OpenMetrics text.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cwm_config::{BackendState, ProviderStatus};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::hooks::Hooks;
use crate::server::ConnCounters;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    module: &'static str,
    outcome: &'static str,
}

type HistogramFamily = Family<SinkLabels, Histogram, fn() -> Histogram>;

/// Request and delivery metrics. Config metrics are read from the provider at scrape time.
pub struct Metrics {
    registry: Registry,
    sink_latency: HistogramFamily,
    /// Analytics logging of answered requests (see [`crate::Receiver::with_analytics`]): the
    /// webhook path records into it, its counters are rendered when it is configured.
    pub(crate) analytics: Option<cwm_modules::analytics::Analytics>,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~3.3 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let sink_latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "cwm_sink_delivery_seconds",
            "Time a sink took to accept an event, by module and outcome",
            sink_latency.clone(),
        );
        Self {
            registry,
            sink_latency,
            analytics: None,
        }
    }

    /// An observer recording into this registry's delivery histogram, for chain steps.
    pub fn observer(&self) -> cwm_modules::context::Observer {
        let family = self.sink_latency.clone();
        std::sync::Arc::new(move |module, ok, took: Duration| {
            let outcome = if ok { "ok" } else { "error" };
            family
                .get_or_create(&SinkLabels { module, outcome })
                .observe(took.as_secs_f64());
        })
    }

    pub fn delivery(&self, module: &'static str, ok: bool, took: Duration) {
        let outcome = if ok { "ok" } else { "error" };
        self.sink_latency
            .get_or_create(&SinkLabels { module, outcome })
            .observe(took.as_secs_f64());
    }

    /// The full exposition: registered metrics, requests per webhook, connections, then the
    /// config backend's gauges.
    pub fn render(
        &self,
        status: &ProviderStatus,
        state: BackendState,
        queued: usize,
        hooks: &Hooks,
        conns: &ConnCounters,
        modules: Option<&cwm_modules::ModuleContext>,
    ) -> String {
        let mut out = String::with_capacity(4096);
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        let body_end = out.rfind("# EOF").unwrap_or(out.len());
        out.truncate(body_end);
        hooks.render_metrics(&mut out);
        let gauge = |out: &mut String, name: &str, help: &str, value: i64| {
            let _ = write!(
                out,
                "# HELP {name} {help}.\n# TYPE {name} gauge\n{name} {value}\n"
            );
        };
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}.\n# TYPE {name} counter\n{name}_total {value}\n"
            );
        };
        gauge(
            &mut out,
            "cwm_http_open_connections",
            "Client connections open now (lingering closes included)",
            conns.open.load(Ordering::Relaxed) as i64,
        );
        gauge(
            &mut out,
            "cwm_http_connection_limit",
            "Most client connections served at once; past it new ones wait in the listen backlog",
            conns.limit.load(Ordering::Relaxed) as i64,
        );
        counter(
            &mut out,
            "cwm_http_connections_at_limit",
            "Times a new connection found the connection limit reached",
            conns.at_limit.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "cwm_http_idle_connections_closed",
            "Idle keep-alive connections closed to make room at the connection limit",
            conns.evicted.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "cwm_http_header_timeouts",
            "Connections closed because a request head did not arrive in time",
            conns.header_timeouts.load(Ordering::Relaxed),
        );
        let connected = i64::from(status.backend == "etcd" && state == BackendState::Healthy);
        gauge(
            &mut out,
            "cwm_config_etcd_connected",
            "1 when the etcd watch is established (always 0 for the file backend)",
            connected,
        );
        gauge(
            &mut out,
            "cwm_config_loaded",
            "1 once the first full configuration load completed",
            i64::from(state != BackendState::Connecting),
        );
        gauge(
            &mut out,
            "cwm_config_revision",
            "etcd revision the served configuration reflects",
            status.revision,
        );
        gauge(
            &mut out,
            "cwm_config_webhooks",
            "Webhooks being served",
            status.total_webhooks as i64,
        );
        gauge(
            &mut out,
            "cwm_config_connections",
            "Connections loaded",
            status.connections_count as i64,
        );
        gauge(
            &mut out,
            "cwm_config_rejected_keys",
            "Config entries rejected by validation",
            status.rejected.len() as i64,
        );
        gauge(
            &mut out,
            "cwm_receive_queue_depth",
            "Events accepted with ack=receive and not yet delivered",
            queued as i64,
        );
        if let Some(modules) = modules {
            out.push_str("# HELP cwm_connection_up 1 when the connection's last delivery succeeded (or none was tried), by connection.\n# TYPE cwm_connection_up gauge\n");
            for c in modules.connections().status() {
                if c.state == cwm_modules::connection::ConnectionState::Unsupported {
                    continue;
                }
                let up = matches!(
                    c.state,
                    cwm_modules::connection::ConnectionState::Healthy
                        | cwm_modules::connection::ConnectionState::Idle
                );
                let name: String = c
                    .connection_name
                    .chars()
                    .filter(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.'))
                    .collect();
                let _ = writeln!(
                    out,
                    "cwm_connection_up{{connection=\"{name}\"}} {}",
                    i64::from(up)
                );
            }
        }
        if let Some(analytics) = &self.analytics {
            let c = analytics.counters();
            gauge(
                &mut out,
                "cwm_analytics_enabled",
                "1 while analytics rows are logged (ANALYTICS_CONNECTION names a clickhouse connection)",
                i64::from(c.enabled),
            );
            counter(
                &mut out,
                "cwm_analytics_rows_written",
                "Analytics rows ClickHouse accepted",
                c.written,
            );
            counter(
                &mut out,
                "cwm_analytics_rows_dropped",
                "Analytics rows given up (queue full, failed INSERT)",
                c.dropped,
            );
            counter(
                &mut out,
                "cwm_analytics_flush_failures",
                "Analytics INSERTs that failed; their rows were dropped",
                c.failed_flushes,
            );
        }
        out.push_str("# HELP cwm_config_resyncs Full configuration re-lists, by reason.\n# TYPE cwm_config_resyncs counter\n");
        for (reason, n) in &status.resyncs {
            let reason: String = reason
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let _ = writeln!(out, "cwm_config_resyncs_total{{reason=\"{reason}\"}} {n}");
        }
        out.push_str("# EOF\n");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
