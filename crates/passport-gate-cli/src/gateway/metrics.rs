//! The gateway's own series: requests on routes without a passport check, requests the
//! gateway refused at admission, and connections per listener. The layer's series are
//! the layer's ([`passport_gate::metrics`]).

use super::GatewayError;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// The `action` labels of `passport_gate_unguarded_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unguarded {
    /// Forwarded without a passport check (`routes.unguarded = "forward"`).
    Forwarded,
    /// Forwarded without a passport check because the route is in `routes.public`.
    Public,
    /// Answered 404 `route_not_allowed` (`routes.unguarded = "refuse"`).
    Refused,
}

impl Unguarded {
    const ALL: [Unguarded; 3] = [Unguarded::Forwarded, Unguarded::Public, Unguarded::Refused];

    const fn label(self) -> &'static str {
        match self {
            Unguarded::Forwarded => "forwarded",
            Unguarded::Public => "public",
            Unguarded::Refused => "refused",
        }
    }
}

/// The `listener` labels of the connection metrics.
pub const LISTENERS: [&str; 2] = ["proxy", "admin"];

/// The connection metrics of one listener.
#[derive(Clone, Debug)]
pub struct ConnectionMetrics {
    /// Connections open now.
    pub open: IntGauge,
    /// Connections closed at once because the listener was full.
    pub refused: IntCounter,
    /// Failed accepts.
    pub accept_errors: IntCounter,
}

/// Every series the gateway exports beside the layer's. Cheap to clone.
#[derive(Clone, Debug)]
pub struct GatewayMetrics {
    /// Access log lines dropped because the sink was slower than the traffic.
    pub access_log_dropped: IntCounter,
    /// Access log lines about refusals over `server.access_log_refusals_per_second`.
    pub access_log_refusals_dropped: IntCounter,
    /// 1 when the last upstream probe succeeded, else 0.
    pub upstream_up: IntGauge,
    /// Reloads of `upstream_auth.token_file` that were not taken (empty, unreadable,
    /// not a header value): the last good credential stays in force.
    pub upstream_auth_reload_failures: IntCounter,
    /// The trace exporter's series.
    #[cfg_attr(not(feature = "otel"), allow(dead_code))]
    pub traces: super::otel::TraceMetrics,
    /// Proxy connections closed after `server.max_auth_failures_per_connection`
    /// consecutive authentication failures.
    pub auth_failure_closes: IntCounter,
    /// Proxy connections closed at accept because their address was under
    /// `server.auth_failure_penalty_seconds`.
    pub penalty_refusals: IntCounter,
    unguarded_requests: IntCounterVec,
    gateway_refusals: IntCounterVec,
    open_connections: IntGaugeVec,
    connections_refused: IntCounterVec,
    accept_errors: IntCounterVec,
}

impl GatewayMetrics {
    /// Creates the series, every label value present at zero, and registers them.
    pub fn register(registry: &Registry) -> Result<GatewayMetrics, prometheus::Error> {
        let vec = |name: &str, help: &str, label: &str, values: &[&str]| {
            let v = IntCounterVec::new(Opts::new(name, help), &[label])?;
            for value in values {
                v.with_label_values(&[value]);
            }
            registry.register(Box::new(v.clone()))?;
            Ok::<_, prometheus::Error>(v)
        };
        let unguarded: Vec<&str> = Unguarded::ALL.iter().map(|a| a.label()).collect();
        let admission: Vec<&str> = GatewayError::ADMISSION.iter().map(|e| e.code()).collect();
        let open_connections = IntGaugeVec::new(
            Opts::new(
                "passport_gate_open_connections",
                "Open client connections, by listener",
            ),
            &["listener"],
        )?;
        for l in LISTENERS {
            open_connections.with_label_values(&[l]);
        }
        registry.register(Box::new(open_connections.clone()))?;
        let access_log_dropped = IntCounter::new(
            "passport_gate_access_log_dropped_total",
            "Access log lines dropped because the sink was slower than the traffic.",
        )?;
        registry.register(Box::new(access_log_dropped.clone()))?;
        let access_log_refusals_dropped = IntCounter::new(
            "passport_gate_access_log_refusals_dropped_total",
            "Access log lines about refused requests not written because server.access_log_refusals_per_second was reached.",
        )?;
        registry.register(Box::new(access_log_refusals_dropped.clone()))?;
        let upstream_up = IntGauge::new(
            "passport_gate_upstream_up",
            "1 when the last upstream probe succeeded, else 0 (with [server.upstream_probe]).",
        )?;
        registry.register(Box::new(upstream_up.clone()))?;
        let upstream_auth_reload_failures = IntCounter::new(
            "passport_gate_upstream_auth_reload_failures_total",
            "Reloads of upstream_auth.token_file not taken (empty, unreadable or not a header value); the last good credential stays in force.",
        )?;
        registry.register(Box::new(upstream_auth_reload_failures.clone()))?;
        let traces = super::otel::TraceMetrics::register(registry)?;
        let auth_failure_closes = IntCounter::new(
            "passport_gate_auth_failure_closes_total",
            "Proxy connections closed after server.max_auth_failures_per_connection consecutive authentication failures.",
        )?;
        registry.register(Box::new(auth_failure_closes.clone()))?;
        let penalty_refusals = IntCounter::new(
            "passport_gate_auth_failure_penalty_refusals_total",
            "Proxy connections closed at accept because their address was under server.auth_failure_penalty_seconds.",
        )?;
        registry.register(Box::new(penalty_refusals.clone()))?;
        Ok(GatewayMetrics {
            traces,
            access_log_dropped,
            access_log_refusals_dropped,
            upstream_up,
            upstream_auth_reload_failures,
            auth_failure_closes,
            penalty_refusals,
            unguarded_requests: vec(
                "passport_gate_unguarded_requests_total",
                "Requests forwarded without a passport check (forwarded, public) or refused on an unguarded route",
                "action",
                &unguarded,
            )?,
            gateway_refusals: vec(
                "passport_gate_gateway_refusals_total",
                "Requests the gateway answered itself before any route or passport check, by code",
                "code",
                &admission,
            )?,
            open_connections,
            connections_refused: vec(
                "passport_gate_connections_refused_total",
                "Connections closed at once because the listener had max_connections open",
                "listener",
                &LISTENERS,
            )?,
            accept_errors: vec(
                "passport_gate_accept_errors_total",
                "Failed accepts (for example EMFILE: no file descriptor left)",
                "listener",
                &LISTENERS,
            )?,
        })
    }

    /// Counts a request on a route without a passport check.
    pub fn unguarded(&self, action: Unguarded) {
        self.unguarded_requests
            .with_label_values(&[action.label()])
            .inc();
    }

    /// Counts a request refused at admission, under its code (one of
    /// [`GatewayError::ADMISSION`]).
    pub fn gateway_refusal(&self, e: GatewayError) {
        self.gateway_refusals.with_label_values(&[e.code()]).inc();
    }

    /// The connection metrics of `listener` (one of [`LISTENERS`]).
    pub fn connections(&self, listener: &'static str) -> ConnectionMetrics {
        ConnectionMetrics {
            open: self.open_connections.with_label_values(&[listener]),
            refused: self.connections_refused.with_label_values(&[listener]),
            accept_errors: self.accept_errors.with_label_values(&[listener]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_series_render_with_documented_names() {
        let registry = Registry::new();
        let m = GatewayMetrics::register(&registry).unwrap();
        m.unguarded(Unguarded::Public);
        let text = passport_gate::metrics::render(&registry);
        for name in [
            "passport_gate_unguarded_requests_total{action=\"public\"} 1",
            "passport_gate_open_connections{listener=\"admin\"}",
            "passport_gate_connections_refused_total{listener=\"proxy\"}",
            "passport_gate_accept_errors_total{listener=\"proxy\"}",
            "passport_gate_gateway_refusals_total",
            "passport_gate_upstream_auth_reload_failures_total 0",
            "passport_gate_auth_failure_closes_total 0",
            "passport_gate_auth_failure_penalty_refusals_total 0",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
    }
}
