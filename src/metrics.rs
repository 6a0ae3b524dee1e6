//! Prometheus metrics, rendered in the text exposition format. Counters and gauges are keyed
//! by name and a rendered label set; the set of label values is small and bounded by
//! configuration (upstream names, cache outcomes), never by request data.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
    gauges: Mutex<BTreeMap<(&'static str, String), i64>>,
}

const HELP: &[(&str, &str, &str)] = &[
    (
        "pinproxy_requests_total",
        "counter",
        "Requests served, by protocol, cache outcome and status class.",
    ),
    (
        "pinproxy_response_bytes_total",
        "counter",
        "Body bytes sent to clients.",
    ),
    (
        "pinproxy_upstream_requests_total",
        "counter",
        "Requests sent to upstreams, by upstream and status.",
    ),
    (
        "pinproxy_upstream_bytes_total",
        "counter",
        "Body bytes received from upstreams into fills.",
    ),
    (
        "pinproxy_fills_total",
        "counter",
        "Upstream fills, by outcome (pinned, mismatch, failed, disk_full).",
    ),
    (
        "pinproxy_digest_mismatch_total",
        "counter",
        "Fills whose bytes did not match the expected digest or length.",
    ),
    (
        "pinproxy_stale_served_total",
        "counter",
        "Mutable resolutions served stale because the upstream failed.",
    ),
    (
        "pinproxy_disk_full_total",
        "counter",
        "Fills aborted because the disk was full.",
    ),
    (
        "pinproxy_fills_in_flight",
        "gauge",
        "Upstream fills currently streaming.",
    ),
    (
        "pinproxy_upstream_ratelimit_limit",
        "gauge",
        "Last rate-limit ceiling an upstream announced (Docker Hub ratelimit-limit).",
    ),
    (
        "pinproxy_upstream_ratelimit_remaining",
        "gauge",
        "Last remaining pull count an upstream announced (Docker Hub ratelimit-remaining).",
    ),
];

impl Metrics {
    pub fn inc(&self, name: &'static str, labels: &[(&str, &str)]) {
        self.add(name, labels, 1);
    }

    pub fn add(&self, name: &'static str, labels: &[(&str, &str)], n: u64) {
        let key = (name, render_labels(labels));
        *self
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default() += n;
    }

    pub fn gauge_set(&self, name: &'static str, labels: &[(&str, &str)], v: i64) {
        let key = (name, render_labels(labels));
        self.gauges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, v);
    }

    pub fn gauge_add(&self, name: &'static str, labels: &[(&str, &str)], v: i64) {
        let key = (name, render_labels(labels));
        *self
            .gauges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default() += v;
    }

    /// Sum of a counter over all label sets whose rendering contains `filter` (tests, logs).
    pub fn counter(&self, name: &str, filter: &str) -> u64 {
        let c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        c.iter()
            .filter(|((n, l), _)| *n == name && l.contains(filter))
            .map(|(_, v)| *v)
            .sum()
    }

    pub fn render(&self) -> String {
        let counters = self
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let gauges = self
            .gauges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut out = String::new();
        for (name, kind, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for ((n, labels), v) in &counters {
                if n == name {
                    let _ = writeln!(out, "{n}{labels} {v}");
                }
            }
            for ((n, labels), v) in &gauges {
                if n == name {
                    let _ = writeln!(out, "{n}{labels} {v}");
                }
            }
        }
        out
    }
}

fn render_labels(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let mut s = String::from("{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let v = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(s, "{k}=\"{v}\"");
    }
    s.push('}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_exposition_format() {
        let m = Metrics::default();
        m.inc(
            "pinproxy_requests_total",
            &[("proto", "oci"), ("cache", "hit")],
        );
        m.add(
            "pinproxy_requests_total",
            &[("proto", "oci"), ("cache", "hit")],
            2,
        );
        m.gauge_set(
            "pinproxy_upstream_ratelimit_remaining",
            &[("upstream", "a\"b")],
            7,
        );
        let r = m.render();
        assert!(
            r.contains("pinproxy_requests_total{proto=\"oci\",cache=\"hit\"} 3"),
            "{r}"
        );
        assert!(
            r.contains("pinproxy_upstream_ratelimit_remaining{upstream=\"a\\\"b\"} 7"),
            "{r}"
        );
        assert!(r.contains("# TYPE pinproxy_fills_in_flight gauge"));
        assert_eq!(m.counter("pinproxy_requests_total", "hit"), 3);
    }
}
