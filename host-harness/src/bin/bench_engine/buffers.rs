//! 5b. Buffers the host hands into the VM per request, on a counting host.
//!
//! Each buffer costs Envoy a `proxy_on_memory_allocate` round trip (about
//! 0.87 µs on Envoy 1.40, ../shared/spec/perf-profile.md), so this is the
//! deterministic stand-in for most of the filter's host cost. The filter
//! reads the epoch key and the inventory `revision` at most once per
//! millisecond per worker: the mean depends on how far apart requests are,
//! the median does not.

use serde_json::{json, Value};

use crate::fixtures::{declared_plugin_config, plugin_config, synthetic_specs};
use crate::host::{one_request, BenchHost};
use crate::report::{median, row, verdict};
use locality_failover::filter::FilterRoot;

/// A successful request may hand this many buffers into the VM (median).
const TARGET: f64 = 3.0;

pub(crate) fn bench_buffers() {
    let metadata = plugin_config("ROUND_ROBIN");
    let mut inline = plugin_config("ROUND_ROBIN");
    inline["inventory"] = json!({ "source": "config", "endpoints": synthetic_specs(4) });
    let declared = declared_plugin_config("ROUND_ROBIN", "svc");
    for (what, config) in [
        ("cluster-metadata inventory", metadata.clone()),
        (
            "cluster-metadata inventory, cluster and attempt count declared",
            declared,
        ),
        ("inline inventory", inline),
    ] {
        for spacing_us in [100, 2_000] {
            successes(what, &config, spacing_us);
        }
        failures(what, &config);
    }
    // The other steering modes, at the benchmark's rate.
    let mut original_dst = metadata;
    original_dst["steering"] = json!({ "mode": "original-dst" });
    let mut route_header = plugin_config("ROUND_ROBIN");
    let mut specs = synthetic_specs(4);
    specs
        .iter_mut()
        .for_each(|s| s.backend = Some("backend-a".into()));
    route_header["inventory"] = json!({ "source": "config", "endpoints": specs });
    route_header["steering"] = json!({ "mode": "route-header" });
    successes(
        "original-dst, cluster-metadata inventory",
        &original_dst,
        100,
    );
    successes(
        "route-header, inline inventory (Envoy picks in the backend)",
        &route_header,
        100,
    );
}

/// A configured filter on a counting host, warmed up (inventory loaded).
fn warm(config: &Value, spacing_us: u64) -> Option<(BenchHost, FilterRoot)> {
    let mut host = BenchHost::new(config.to_string().into_bytes());
    host.publish_inventory(4, "1", 0);
    host.spacing = spacing_us * 1_000;
    let mut root = FilterRoot::new(7);
    if !root.on_configure(&mut host) {
        return None;
    }
    for _ in 0..100 {
        one_request(&mut host, &mut root, 200);
    }
    Some((host, root))
}

/// Buffers (and host calls) of each of `n` requests answered `code`.
fn per_request(host: &mut BenchHost, root: &mut FilterRoot, n: usize, code: i64) -> Counts {
    let mut counts = Counts::default();
    for _ in 0..n {
        let before = host.tally.snapshot();
        let steered = one_request(host, root, code);
        let after = host.tally.snapshot();
        counts.push(steered, before, after);
    }
    counts
}

fn successes(what: &str, config: &Value, spacing_us: u64) {
    let Some((mut host, mut root)) = warm(config, spacing_us) else {
        row(
            "5",
            &format!("buffers per request, {what}"),
            "configuration refused",
            "",
            "MISS",
        );
        return;
    };
    let mut c = per_request(&mut host, &mut root, 10_000, 200);
    let (median, mean) = c.buffers();
    // The target is for requests at the benchmark's rate (about 10k/s per
    // worker); requests 2 ms apart each re-read the epoch and revision.
    let (target, ok) = match spacing_us {
        100 => ("<= 3 (median)", verdict(c.steered() && median <= TARGET)),
        _ => ("", if c.steered() { "" } else { "not steered" }),
    };
    row(
        "5",
        &format!("buffers handed to the VM per successful request, {what}, requests {spacing_us} µs apart (counting host, 10,000 requests)"),
        &format!("median {median:.0}, mean {mean:.2} ({}; {:.2} host calls)", c.split(), c.mean_calls()),
        target,
        ok,
    );
}

/// A failure (503, below the ejection threshold) then a success that resets
/// the streak, 1,000 times: the buffers of each kind of request.
fn failures(what: &str, config: &Value) {
    let Some((mut host, mut root)) = warm(config, 100) else {
        return;
    };
    let mut failed = Counts::default();
    let mut reset = Counts::default();
    for _ in 0..1_000 {
        failed.merge(per_request(&mut host, &mut root, 1, 503));
        reset.merge(per_request(&mut host, &mut root, 1, 200));
    }
    for (kind, mut c) in [
        ("failed request (upstream 503, streak starts)", failed),
        ("success that resets the streak", reset),
    ] {
        let (median, mean) = c.buffers();
        row(
            "5",
            &format!("buffers handed to the VM per {kind}, {what} (counting host, 1,000 pairs)"),
            &format!(
                "median {median:.0}, mean {mean:.2} ({}; {:.2} host calls)",
                c.split(),
                c.mean_calls()
            ),
            "",
            if c.steered() { "" } else { "not steered" },
        );
    }
}

/// Per-request samples: buffers in total and by kind, host calls.
#[derive(Default)]
struct Counts {
    buffers: Vec<f64>,
    /// Sums of property, shared-data and header buffers.
    kinds: [u64; 3],
    calls: u64,
    /// Requests the filter did not steer (none expected).
    missed: u64,
}

impl Counts {
    fn push(&mut self, steered: bool, before: [u64; 4], after: [u64; 4]) {
        let d: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
        self.calls += d[0];
        for (k, v) in self.kinds.iter_mut().zip(&d[1..]) {
            *k += v;
        }
        self.buffers.push((d[1] + d[2] + d[3]) as f64);
        self.missed += u64::from(!steered);
    }

    fn merge(&mut self, other: Counts) {
        self.buffers.extend(other.buffers);
        for (k, v) in self.kinds.iter_mut().zip(other.kinds) {
            *k += v;
        }
        self.calls += other.calls;
        self.missed += other.missed;
    }

    fn steered(&self) -> bool {
        self.missed == 0 && !self.buffers.is_empty()
    }

    fn n(&self) -> f64 {
        self.buffers.len().max(1) as f64
    }

    /// (median, mean) buffers per request.
    fn buffers(&mut self) -> (f64, f64) {
        let mean = self.buffers.iter().sum::<f64>() / self.n();
        (median(&mut self.buffers), mean)
    }

    fn split(&self) -> String {
        let [p, s, h] = self.kinds.map(|k| k as f64 / self.n());
        format!("property {p:.2}, shared data {s:.2}, header {h:.2}")
    }

    fn mean_calls(&self) -> f64 {
        self.calls as f64 / self.n()
    }
}
