//! The seed corpus (`fuzz/seeds/<target>/`), generated from the shared
//! scenarios: their `config` objects as plugin configuration, their
//! endpoints as cluster metadata, whole scenario runs encoded as `filter`
//! inputs, and `engine` inputs picked from pseudo-random ones for reaching
//! ejections, returns, failover and panic mode.
//!
//! Regenerate with
//! `cargo test --release --manifest-path fuzz/Cargo.toml -- --ignored write_seeds`.

use std::collections::BTreeMap;
use std::path::Path;

use locality_failover::metadata::metadata_for;
use serde_json::{json, Value};

use crate::drivers::engine::stats;
use crate::drivers::filter::RAW_MAX;
use crate::gen::LABEL_KEYS;
use crate::input::Encoder;

pub struct Scenario {
    pub name: String,
    pub config: Value,
    pub endpoints: Value,
    pub client: BTreeMap<String, String>,
}

pub fn load_scenarios(dir: &Path) -> Vec<Scenario> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let client = v["client"]["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        out.push(Scenario {
            name: path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("scenario")
                .to_string(),
            config: v["config"].clone(),
            endpoints: v["endpoints"].clone(),
            client,
        });
    }
    out
}

/// The scenario's endpoints as the inventory the filter reads (`name`,
/// `address`, `labels`, `weight`).
fn inventory(s: &Scenario) -> Value {
    let endpoints: Vec<Value> = s
        .endpoints
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    let mut o =
                        json!({"address": e["address"], "name": e["name"], "labels": e["labels"]});
                    if let Some(w) = e.get("weight") {
                        o["weight"] = w.clone();
                    }
                    o
                })
                .collect()
        })
        .unwrap_or_default();
    json!({ "revision": "1", "endpoints": endpoints })
}

fn with_inline_inventory(s: &Scenario) -> Value {
    let mut c = s.config.clone();
    if !c.is_object() {
        c = json!({});
    }
    c["inventory"] = json!({"source": "config", "endpoints": inventory(s)["endpoints"]});
    c["locality"] = json!({ "labels": s.client });
    c
}

const CONFIGS: &[(&str, &str)] = &[
    ("empty.json", ""),
    ("object.json", "{}"),
    (
        "original-dst.json",
        r#"{"steering":{"mode":"original-dst","addressPrefix":"envoy://connect_originate/"},"trafficDistribution":"PreferClose"}"#,
    ),
    (
        "route-header.json",
        r#"{"steering":{"mode":"route-header"},"inventory":{"endpoints":[{"address":"10.0.0.1:80","backend":"b-east","locality":"us-east-1/us-east-1a"},{"address":"10.0.1.1:80","backend":"b-west","locality":"us-west-2/us-west-2a"}]},"locality":{"region":"us-east-1","zone":"us-east-1a"}}"#,
    ),
    (
        "distribute.json",
        r#"{"trafficPolicy":{"loadBalancer":{"simple":"RANDOM","localityLbSetting":{"distribute":[{"from":"us-east-1/*","to":{"us-east-1/*":80,"us-west-2/*":20}}]}}}}"#,
    ),
    (
        "failover.json",
        r#"{"trafficPolicy":{"loadBalancer":{"localityLbSetting":{"failover":[{"from":"us-east-1","to":"us-west-2"}],"failoverPriority":["topology.istio.io/network"]}},"outlierDetection":{"consecutive5xxErrors":1,"consecutiveGatewayErrors":2,"splitExternalLocalOriginErrors":true,"interval":"1s","baseEjectionTime":"100ms","maxEjectionPercent":100,"minHealthPercent":70}},"steering":{"maxHosts":16},"sharedDataPrefix":"lf"}"#,
    ),
    (
        "lint.json",
        r#"{"trafficPolicy":{"loadBalancer":{"localityLbSetting":{"failoverPriority":["topology.kubernetes.io/zone","topology.kubernetes.io/region"]}},"outlierDetection":{"consecutiveErrors":5,"consecutive5xxErrors":0}},"steerng":{}}"#,
    ),
];

fn encode_label(e: &mut Encoder, key: &str, value: &str) {
    let Some(k) = LABEL_KEYS.iter().position(|l| *l == key) else {
        return;
    };
    let value = &value.as_bytes()[..value.len().min(32)];
    // Not a free-text key; the key; free-text value; the value.
    e.u8(1).below(k, LABEL_KEYS.len()).u8(0).bytes(value, 32);
}

/// A `filter` input that plays the scenario: raw config and metadata bytes,
/// the client's labels on the node, then requests, a failing endpoint,
/// time passing, and the hand-driven VM's request and log.
fn filter_input(s: &Scenario, config: &[u8], workers: usize) -> Vec<u8> {
    let mut e = Encoder::default();
    e.below(workers - 1, 3);
    let labels: Vec<_> = s
        .client
        .iter()
        .filter(|(k, _)| LABEL_KEYS.contains(&k.as_str()))
        .take(5)
        .collect();
    e.below(labels.len(), 6);
    for (k, v) in labels {
        encode_label(&mut e, k, v);
    }
    e.u64(7);
    let metadata = metadata_for("locality-failover", &inventory(s));
    e.below(0, 8).bytes(config, RAW_MAX);
    e.below(0, 8).bytes(&metadata, RAW_MAX);
    e.below(0, 3); // cluster
    let request = |e: &mut Encoder| {
        e.below(0, 18).below(0, 4);
    };
    // Retries: 2 attempts on 5xx, gateway errors, connect failures, resets.
    e.below(8, 18).u8(1).below(2, 4).u8(1).u8(1).u8(1).u8(1);
    for _ in 0..4 {
        request(&mut e);
    }
    // The first endpoint answers 503.
    e.below(7, 18).u8(0).below(3, 6);
    for _ in 0..10 {
        request(&mut e);
    }
    // A client tries to steer.
    e.below(0, 18).below(1, 4).below(0, 8).below(2, 8);
    e.below(6, 18).below(5, 8); // 181 s
    for _ in 0..6 {
        request(&mut e);
    }
    // The hand-driven VM: a request, then its log with a 503.
    e.below(11, 18).below(0, 4);
    e.below(13, 18)
        .u8(0)
        .below(2, 6)
        .below(1, 10)
        .below(0, 6)
        .below(0, 6)
        .below(0, 6);
    e.out
}

/// Engine inputs: the pseudo-random ones that reach the most of each state.
fn engine_inputs() -> Vec<(String, Vec<u8>)> {
    let counters = [
        ("ejections", &stats::EJECTIONS),
        ("returns", &stats::RETURNS),
        ("panic", &stats::PANIC_PICKS),
        ("failover", &stats::FAILOVER_PICKS),
    ];
    let mut best: Vec<(u64, Vec<u8>)> = vec![(0, Vec::new()); counters.len()];
    let mut state = 42u64;
    for _ in 0..3000 {
        let len = 64 + (crate::gen::mix(state) % 960) as usize;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                state = crate::gen::mix(state);
                if state.is_multiple_of(3) {
                    (state >> 8) as u8
                } else {
                    ((state >> 8) % 7) as u8
                }
            })
            .collect();
        let before: Vec<u64> = counters.iter().map(|(_, c)| stats::get(c)).collect();
        crate::drivers::engine::run(&data);
        for (i, (_, c)) in counters.iter().enumerate() {
            let gained = stats::get(c) - before[i];
            if gained > best[i].0 {
                best[i] = (gained, data.clone());
            }
        }
    }
    counters
        .iter()
        .zip(best)
        .filter(|(_, (n, _))| *n > 0)
        .map(|((name, _), (_, data))| (format!("most-{name}.bin"), data))
        .collect()
}

/// Every seed: (target, file name, bytes).
pub fn all(scenarios: &[Scenario]) -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, text) in CONFIGS {
        out.push(("config", name.to_string(), text.as_bytes().to_vec()));
    }
    for (i, s) in scenarios.iter().enumerate() {
        let config = serde_json::to_vec(&s.config).unwrap_or_default();
        out.push(("config", format!("{}.json", s.name), config.clone()));
        let inline = serde_json::to_vec(&with_inline_inventory(s)).unwrap_or_default();
        out.push(("config", format!("{}-inline.json", s.name), inline.clone()));
        out.push((
            "metadata",
            format!("{}.pb", s.name),
            metadata_for("locality-failover", &inventory(s)),
        ));
        out.push((
            "filter",
            format!("{}.bin", s.name),
            filter_input(s, &config, 1 + i % 2),
        ));
        if i == 0 {
            out.push((
                "filter",
                format!("{}-inline.bin", s.name),
                filter_input(s, &inline, 1),
            ));
        }
    }
    out.push((
        "metadata",
        "mixed.pb".to_string(),
        metadata_for(
            "locality-failover",
            &json!({"endpoints": [
                {"address": "10.0.0.1:80", "weight": 3, "locality": "us-east-1/us-east-1a/sz1", "backend": "b-east"},
                {"address": "[::1]:8080", "name": "v6", "labels": {"topology.istio.io/network": "net1"}},
                {"address": " 10.0.0.2:80 ", "weight": 1000000}
            ]}),
        ),
    ));
    for (name, data) in engine_inputs() {
        out.push(("engine", name, data));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    #[ignore = "writes fuzz/seeds/; run on purpose"]
    fn write_seeds() {
        let scenarios = super::load_scenarios(&root().join("../../shared/scenarios"));
        assert!(!scenarios.is_empty(), "no scenarios in ../shared/scenarios");
        for (target, name, data) in super::all(&scenarios) {
            let dir = root().join("seeds").join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), data).unwrap();
        }
    }

    /// The committed seeds replay clean.
    #[test]
    fn seeds_replay() {
        for target in ["config", "metadata", "engine", "filter"] {
            let Ok(entries) = std::fs::read_dir(root().join("seeds").join(target)) else {
                continue;
            };
            for entry in entries.flatten() {
                let data = std::fs::read(entry.path()).unwrap();
                match target {
                    "config" => crate::drivers::config::run(&data),
                    "metadata" => crate::drivers::metadata::run(&data),
                    "engine" => crate::drivers::engine::run(&data),
                    _ => crate::drivers::filter::run(&data),
                }
            }
        }
    }
}
