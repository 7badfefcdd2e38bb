//! Generators shared by the drivers: endpoints and labels from a small
//! alphabet (so that collisions, duplicates and matches are common), plugin
//! configurations from arbitrary choices, and protobuf `Struct` values.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;

use locality_failover::config::istio::{
    Distribute, Failover, LoadBalancerSettings, LocalityLbSetting, OutlierDetection, TrafficPolicy,
};
use locality_failover::config::{
    InventoryConfig, LocalityConfig, PluginConfig, SteeringConfig, LABEL_CLUSTER, LABEL_HOSTNAME,
    LABEL_NETWORK, LABEL_REGION, LABEL_SUBZONE, LABEL_ZONE,
};
use locality_failover::inventory::{EndpointSpec, Labels, MAX_ENDPOINTS, MAX_WEIGHT};
use prost_types::value::Kind;
use serde_json::{json, Map, Value};

use crate::input::Input;

pub const REGIONS: &[&str] = &["", "us-east-1", "us-west-2", "eu-west-1"];
pub const ZONES: &[&str] = &["", "us-east-1a", "us-east-1b", "us-west-2a", "eu-west-1a"];
pub const SUBZONES: &[&str] = &["", "sz1", "sz2"];
pub const NETWORKS: &[&str] = &["", "net1", "net2"];
pub const OTHER_VALUES: &[&str] = &["", "a", "b", "node-1"];
pub const LABEL_KEYS: &[&str] = &[
    LABEL_NETWORK,
    LABEL_REGION,
    LABEL_ZONE,
    LABEL_SUBZONE,
    LABEL_HOSTNAME,
    LABEL_CLUSTER,
    "app",
    "version",
];
pub const BACKENDS: &[&str] = &["b-east", "b-west", "b1", ""];

fn values_for(key: &str) -> &'static [&'static str] {
    match key {
        LABEL_REGION => REGIONS,
        LABEL_ZONE => ZONES,
        LABEL_SUBZONE => SUBZONES,
        LABEL_NETWORK => NETWORKS,
        _ => OTHER_VALUES,
    }
}

/// A label value: usually from the alphabet of its key, sometimes free text.
pub fn label_value(inp: &mut Input, key: &str) -> String {
    if inp.ratio(1, 16) {
        return inp.string(32);
    }
    inp.pick(values_for(key)).to_string()
}

pub fn labels(inp: &mut Input) -> Labels {
    let mut out = Labels::new();
    for _ in 0..inp.below(6) {
        let key = if inp.ratio(1, 32) {
            inp.string(8)
        } else {
            inp.pick(LABEL_KEYS).to_string()
        };
        let value = label_value(inp, &key);
        out.insert(key, value);
    }
    out
}

/// `region/zone/subzone` as Istio writes a locality, sometimes malformed.
pub fn locality(inp: &mut Input) -> String {
    match inp.below(8) {
        0 => "a/b/c/d".to_string(),
        1 => "//".to_string(),
        2 => inp.string(16),
        3 => inp.pick(REGIONS).to_string(),
        4 => format!("{}/{}", inp.pick(REGIONS), inp.pick(ZONES)),
        _ => format!(
            "{}/{}/{}",
            inp.pick(REGIONS),
            inp.pick(ZONES),
            inp.pick(SUBZONES)
        ),
    }
}

const BAD_ADDRESSES: &[&str] = &[
    "nope",
    "10.0.0.1",
    "10.0.0.1:0",
    "",
    "10.0.0.256:80",
    "[::1]:99999",
    "::1:80",
    "10.0.0.1:80,10.0.0.2:80",
    "localhost:80",
    "10.0.0.01:80",
];

/// An address: mostly a few IPv4 hosts (so duplicates happen), some IPv6,
/// some padded with whitespace, some invalid.
pub fn address(inp: &mut Input) -> String {
    let port = inp.pick(&[80u16, 8080, 443]);
    match inp.below(16) {
        0..=10 => format!("10.0.{}.{}:{}", inp.below(2), inp.below(8), port),
        11 => format!("[::{}]:{}", inp.below(4) + 1, port),
        12 => format!("[::ffff:10.0.0.{}]:{}", inp.below(4), port),
        13 => format!(" 10.0.0.{}:{}\t", inp.below(4), port),
        14 => inp.pick(BAD_ADDRESSES).to_string(),
        _ => inp.string(24),
    }
}

/// Weights including the refused ones (0, above the maximum).
pub fn weight(inp: &mut Input) -> Option<u32> {
    match inp.below(12) {
        0..=3 => None,
        4 => Some(0),
        5 => Some(1),
        6 => Some(2),
        7 => Some(7),
        8 => Some(MAX_WEIGHT),
        9 => Some(MAX_WEIGHT + 1),
        10 => Some(u32::MAX),
        _ => Some(inp.u32()),
    }
}

pub fn endpoint(inp: &mut Input) -> EndpointSpec {
    EndpointSpec {
        address: address(inp),
        name: if inp.ratio(1, 4) {
            Some(inp.string(12))
        } else {
            None
        },
        labels: labels(inp),
        locality: if inp.ratio(1, 3) {
            Some(locality(inp))
        } else {
            None
        },
        weight: weight(inp),
        backend: if inp.ratio(1, 3) {
            Some(inp.pick(BACKENDS).to_string())
        } else {
            None
        },
    }
}

/// A small mixing function for bulk inventories (deterministic from the input).
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// An endpoint list: hand-picked entries, or a bulk list (up to 200
/// distinct endpoints, past the 140 where Envoy's integer health math
/// rounds one healthy host to zero, with labels and weights from a seed).
pub fn endpoints(inp: &mut Input) -> Vec<EndpointSpec> {
    if inp.ratio(1, 16) {
        let n = inp.below(200) + 1;
        let seed = inp.u64();
        let weighted = inp.bool();
        return (0..n)
            .map(|i| {
                let r = mix(seed ^ i as u64);
                let mut labels = Labels::new();
                labels.insert(LABEL_NETWORK.into(), NETWORKS[(r % 3) as usize].into());
                labels.insert(LABEL_REGION.into(), REGIONS[((r >> 8) % 4) as usize].into());
                labels.insert(LABEL_ZONE.into(), ZONES[((r >> 16) % 5) as usize].into());
                EndpointSpec {
                    address: format!("10.{}.{}.{}:8080", i / 65_536, (i / 256) % 256, i % 256),
                    labels,
                    weight: weighted.then_some(((r >> 24) % 5 + 1) as u32),
                    backend: Some(BACKENDS[((r >> 32) % 3) as usize].into()),
                    ..Default::default()
                }
            })
            .collect();
    }
    (0..inp.below(12)).map(|_| endpoint(inp)).collect()
}

/// Independent statement of what `Inventory::from_specs` must accept.
pub fn expect_valid(specs: &[EndpointSpec]) -> bool {
    if specs.is_empty() || specs.len() > MAX_ENDPOINTS {
        return false;
    }
    let mut seen = HashSet::new();
    for s in specs {
        let Ok(addr) = s.address.trim().parse::<SocketAddr>() else {
            return false;
        };
        if addr.port() == 0 {
            return false;
        }
        let w = s.weight.unwrap_or(1);
        if w == 0 || w > MAX_WEIGHT {
            return false;
        }
        if s.locality
            .as_ref()
            .is_some_and(|l| l.split('/').count() > 3)
        {
            return false;
        }
        if !seen.insert(addr.to_string()) {
            return false;
        }
    }
    true
}

const DURATIONS: &[&str] = &[
    "1ms",
    "10ms",
    "100ms",
    "1s",
    "5s",
    "10s",
    "30s",
    "3m",
    "1h",
    "0",
    "-1s",
    "bogus",
    "1.5s",
    "99999999999999999999h",
    "",
];

fn duration(inp: &mut Input) -> Option<String> {
    if inp.ratio(1, 3) {
        None
    } else {
        Some(inp.pick(DURATIONS).to_string())
    }
}

fn count(inp: &mut Input) -> Option<u32> {
    match inp.below(10) {
        0..=2 => None,
        3 => Some(0),
        4 => Some(1),
        5 => Some(2),
        6 => Some(3),
        7 => Some(5),
        8 => Some(u32::MAX),
        _ => Some(inp.u32()),
    }
}

fn percent(inp: &mut Input) -> Option<i32> {
    match inp.below(12) {
        0..=1 => None,
        2 => Some(0),
        3 => Some(1),
        4 => Some(10),
        5 => Some(33),
        6 => Some(50),
        7 => Some(70),
        8 => Some(99),
        9 => Some(100),
        10 => Some(inp.pick(&[101, -1, i32::MIN, i32::MAX])),
        _ => Some(inp.u8() as i32),
    }
}

pub fn outlier_detection(inp: &mut Input) -> OutlierDetection {
    OutlierDetection {
        consecutive_5xx_errors: count(inp),
        consecutive_gateway_errors: count(inp),
        consecutive_local_origin_failures: count(inp),
        split_external_local_origin_errors: inp.ratio(1, 3),
        interval: duration(inp),
        base_ejection_time: duration(inp),
        max_ejection_percent: percent(inp),
        min_health_percent: percent(inp),
        consecutive_errors: if inp.ratio(1, 8) { Some(5) } else { None },
    }
}

fn priority_entry(inp: &mut Input) -> String {
    match inp.below(10) {
        0 => String::new(),
        1 => "a=b=c".to_string(),
        2 => format!("{}={}", LABEL_REGION, inp.pick(REGIONS)),
        3 => format!("{}={}", LABEL_NETWORK, inp.pick(NETWORKS)),
        4 => inp.string(10),
        _ => inp.pick(LABEL_KEYS).to_string(),
    }
}

const LOCALITY_RULES: &[&str] = &[
    "*",
    "us-east-1/*",
    "us-east-1",
    "us-east-1/us-east-1a/*",
    "us-west-2/*",
    "eu-west-1/eu-west-1a",
    "",
    "nowhere",
];

fn distribute(inp: &mut Input) -> Distribute {
    let mut to = BTreeMap::new();
    let k = inp.below(3) + 1;
    let valid = inp.ratio(3, 4);
    let mut left = 100u32;
    for i in 0..k {
        let w = if !valid {
            inp.u8() as u32
        } else if i + 1 == k {
            left
        } else {
            let w = inp.below(left as usize + 1) as u32;
            left -= w;
            w
        };
        to.insert(inp.pick(LOCALITY_RULES).to_string(), w);
    }
    Distribute {
        from: inp.pick(LOCALITY_RULES).to_string(),
        to,
    }
}

fn locality_lb(inp: &mut Input) -> LocalityLbSetting {
    LocalityLbSetting {
        enabled: inp.pick(&[None, None, Some(true), Some(false)]),
        distribute: if inp.ratio(1, 5) {
            (0..inp.below(3) + 1).map(|_| distribute(inp)).collect()
        } else {
            vec![]
        },
        failover: if inp.ratio(1, 4) {
            (0..inp.below(3) + 1)
                .map(|_| Failover {
                    from: inp.pick(REGIONS).to_string(),
                    to: if inp.ratio(1, 8) {
                        "us-*".to_string()
                    } else {
                        inp.pick(REGIONS).to_string()
                    },
                })
                .collect()
        } else {
            vec![]
        },
        failover_priority: if inp.ratio(2, 3) {
            (0..inp.below(6)).map(|_| priority_entry(inp)).collect()
        } else {
            vec![]
        },
    }
}

const LB_SIMPLE: &[Option<&str>] = &[
    None,
    Some("ROUND_ROBIN"),
    Some("LEAST_REQUEST"),
    Some("RANDOM"),
    Some("LEAST_CONN"),
    Some("UNSPECIFIED"),
    Some("PASSTHROUGH"),
];

const DISTRIBUTIONS: &[Option<&str>] = &[
    None,
    None,
    Some("PreferNetwork"),
    Some("PreferClose"),
    Some("PreferSameZone"),
    Some("PreferSameNode"),
    Some("Any"),
    Some(""),
    Some("preferclose"),
    Some("Nearest"),
];

/// The failover policy part of a plugin configuration.
pub fn traffic(inp: &mut Input, raw: &mut PluginConfig) {
    raw.traffic_distribution = inp.pick(DISTRIBUTIONS).map(str::to_string);
    if inp.ratio(7, 8) {
        raw.traffic_policy = Some(TrafficPolicy {
            load_balancer: if inp.ratio(3, 4) {
                Some(LoadBalancerSettings {
                    simple: inp.pick(LB_SIMPLE).map(str::to_string),
                    consistent_hash: None,
                    locality_lb_setting: if inp.ratio(3, 4) {
                        Some(locality_lb(inp))
                    } else {
                        None
                    },
                })
            } else {
                None
            },
            // Mostly with outlier detection: that is where ejection happens.
            outlier_detection: if inp.ratio(6, 8) {
                Some(outlier_detection(inp))
            } else {
                None
            },
        });
    }
}

const STEERING_MODES: &[Option<&str>] = &[
    None,
    None,
    Some("override-host"),
    Some("original-dst"),
    Some("route-header"),
    Some("bogus"),
];
const HEADERS: &[Option<&str>] = &[
    None,
    None,
    None,
    Some("x-locality-failover-hosts"),
    Some("X-Upstream-Host"),
    Some(":authority"),
    Some("bad header"),
    Some(""),
];
const PREFIXES: &[Option<&str>] = &[
    None,
    None,
    Some(""),
    Some("envoy://connect_originate/"),
    Some("a,b"),
];
const NAMESPACES: &[Option<&str>] = &[
    None,
    None,
    Some("locality-failover"),
    Some("other"),
    Some(""),
];
/// `inventory.cluster`: the filter driver's first cluster, another, empty.
const DECLARED_CLUSTERS: &[Option<&str>] = &[
    None,
    None,
    Some("outbound|8080||svc.ns.svc.cluster.local"),
    Some("outbound|80||other"),
    Some(""),
];
const ATTEMPT_COUNTS: &[Option<&str>] = &[
    None,
    Some("property"),
    Some("responseHeader"),
    Some("header"),
];
const SOURCES: &[Option<&str>] = &[
    None,
    None,
    Some("clusterMetadata"),
    Some("config"),
    Some("eds"),
];

/// A whole plugin configuration: policy, inventory source, steering,
/// locality override, shared-data prefix.
pub fn plugin_config(inp: &mut Input) -> PluginConfig {
    let mut raw = PluginConfig::default();
    traffic(inp, &mut raw);
    let inline = inp.ratio(1, 3);
    raw.inventory = Some(InventoryConfig {
        source: inp.pick(SOURCES).map(str::to_string),
        namespace: inp.pick(NAMESPACES).map(str::to_string),
        endpoints: if inline { Some(endpoints(inp)) } else { None },
        cluster: inp.pick(DECLARED_CLUSTERS).map(str::to_string),
        ..Default::default()
    });
    if inp.ratio(1, 2) {
        raw.steering = Some(SteeringConfig {
            mode: inp.pick(STEERING_MODES).map(str::to_string),
            header: inp.pick(HEADERS).map(str::to_string),
            address_prefix: inp.pick(PREFIXES).map(str::to_string),
            max_hosts: inp.pick(&[
                None,
                None,
                Some(0),
                Some(1),
                Some(2),
                Some(3),
                Some(16),
                Some(17),
                Some(usize::MAX),
            ]),
            attempt_count: inp.pick(ATTEMPT_COUNTS).map(str::to_string),
        });
    }
    if inp.ratio(1, 2) {
        raw.locality = Some(LocalityConfig {
            region: inp.ratio(1, 2).then(|| inp.pick(REGIONS).to_string()),
            zone: inp.ratio(1, 2).then(|| inp.pick(ZONES).to_string()),
            subzone: inp.ratio(1, 4).then(|| inp.pick(SUBZONES).to_string()),
            network: inp.ratio(1, 2).then(|| inp.pick(NETWORKS).to_string()),
            labels: labels(inp),
        });
    }
    raw.shared_data_prefix = inp
        .pick(&[None, None, None, Some("lf"), Some("")])
        .map(str::to_string);
    raw
}

/// The JSON a user would write for `raw` (the drivers feed bytes, as Envoy does).
pub fn plugin_config_json(raw: &PluginConfig) -> Value {
    let mut top = Map::new();
    if let Some(tp) = &raw.traffic_policy {
        let mut t = Map::new();
        if let Some(lb) = &tp.load_balancer {
            t.insert("loadBalancer".into(), load_balancer_json(lb));
        }
        if let Some(od) = &tp.outlier_detection {
            t.insert("outlierDetection".into(), outlier_detection_json(od));
        }
        top.insert("trafficPolicy".into(), Value::Object(t));
    }
    put(
        &mut top,
        "trafficDistribution",
        raw.traffic_distribution.clone(),
    );
    if let Some(inv) = &raw.inventory {
        let mut m = Map::new();
        put(&mut m, "source", inv.source.clone());
        put(&mut m, "namespace", inv.namespace.clone());
        put(&mut m, "cluster", inv.cluster.clone());
        if let Some(e) = &inv.endpoints {
            m.insert(
                "endpoints".into(),
                serde_json::to_value(e).unwrap_or_default(),
            );
        }
        top.insert("inventory".into(), Value::Object(m));
    }
    if let Some(s) = &raw.steering {
        let mut m = Map::new();
        put(&mut m, "mode", s.mode.clone());
        put(&mut m, "header", s.header.clone());
        put(&mut m, "addressPrefix", s.address_prefix.clone());
        put(&mut m, "maxHosts", s.max_hosts.map(|v| v as u64));
        put(&mut m, "attemptCount", s.attempt_count.clone());
        top.insert("steering".into(), Value::Object(m));
    }
    if let Some(l) = &raw.locality {
        let mut m = Map::new();
        put(&mut m, "region", l.region.clone());
        put(&mut m, "zone", l.zone.clone());
        put(&mut m, "subzone", l.subzone.clone());
        put(&mut m, "network", l.network.clone());
        if !l.labels.is_empty() {
            m.insert("labels".into(), json!(l.labels));
        }
        top.insert("locality".into(), Value::Object(m));
    }
    put(&mut top, "sharedDataPrefix", raw.shared_data_prefix.clone());
    Value::Object(top)
}

/// Sets `k` when there is a value (an absent field stays absent).
fn put<T: Into<Value>>(m: &mut Map<String, Value>, k: &str, v: Option<T>) {
    if let Some(v) = v {
        m.insert(k.to_string(), v.into());
    }
}

/// `trafficPolicy.loadBalancer`, its `localityLbSetting` included.
fn load_balancer_json(lb: &LoadBalancerSettings) -> Value {
    let mut l = Map::new();
    put(&mut l, "simple", lb.simple.clone());
    if let Some(s) = &lb.locality_lb_setting {
        let mut m = Map::new();
        put(&mut m, "enabled", s.enabled);
        if !s.distribute.is_empty() {
            m.insert(
                "distribute".into(),
                s.distribute
                    .iter()
                    .map(|d| json!({"from": d.from, "to": d.to}))
                    .collect(),
            );
        }
        if !s.failover.is_empty() {
            m.insert(
                "failover".into(),
                s.failover
                    .iter()
                    .map(|f| json!({"from": f.from, "to": f.to}))
                    .collect(),
            );
        }
        if !s.failover_priority.is_empty() {
            m.insert("failoverPriority".into(), json!(s.failover_priority));
        }
        l.insert("localityLbSetting".into(), Value::Object(m));
    }
    Value::Object(l)
}

/// `trafficPolicy.outlierDetection`.
fn outlier_detection_json(od: &OutlierDetection) -> Value {
    let mut o = Map::new();
    put(&mut o, "consecutive5xxErrors", od.consecutive_5xx_errors);
    put(
        &mut o,
        "consecutiveGatewayErrors",
        od.consecutive_gateway_errors,
    );
    put(
        &mut o,
        "consecutiveLocalOriginFailures",
        od.consecutive_local_origin_failures,
    );
    if od.split_external_local_origin_errors {
        o.insert("splitExternalLocalOriginErrors".into(), true.into());
    }
    put(&mut o, "interval", od.interval.clone());
    put(&mut o, "baseEjectionTime", od.base_ejection_time.clone());
    put(&mut o, "maxEjectionPercent", od.max_ejection_percent);
    put(&mut o, "minHealthPercent", od.min_health_percent);
    put(&mut o, "consecutiveErrors", od.consecutive_errors);
    Value::Object(o)
}

/// Keys a generated `Struct` uses: the inventory's own, plus noise.
const STRUCT_KEYS: &[&str] = &[
    "endpoints",
    "revision",
    "address",
    "name",
    "labels",
    "locality",
    "weight",
    "backend",
    LABEL_REGION,
    LABEL_ZONE,
    "",
];

/// A `google.protobuf.Value`, depth-limited (hand-written recursion).
pub fn pb_value(inp: &mut Input, depth: u32) -> prost_types::Value {
    let leaf = depth == 0;
    let kind = match inp.below(if leaf { 5 } else { 8 }) {
        0 => Some(Kind::NullValue(inp.pick(&[0, 0, 1, -1]))),
        1 => Some(Kind::NumberValue(match inp.below(10) {
            0 => f64::NAN,
            1 => f64::INFINITY,
            2 => -0.0,
            3 => 1.5,
            4 => 1e300,
            5 => -3.0,
            6 => 9.1e15,
            7 => f64::from(inp.u32()),
            _ => f64::from_bits(inp.u64()),
        })),
        2 => Some(Kind::StringValue(if inp.bool() {
            address(inp)
        } else {
            inp.string(16)
        })),
        3 => Some(Kind::BoolValue(inp.bool())),
        4 => None,
        5 | 6 => Some(Kind::StructValue(pb_struct(inp, depth - 1))),
        _ => Some(Kind::ListValue(prost_types::ListValue {
            values: (0..inp.below(5))
                .map(|_| pb_value(inp, depth - 1))
                .collect(),
        })),
    };
    prost_types::Value { kind }
}

pub fn pb_struct(inp: &mut Input, depth: u32) -> prost_types::Struct {
    let mut fields = BTreeMap::new();
    for _ in 0..inp.below(5) {
        let key = if inp.ratio(1, 8) {
            inp.string(8)
        } else {
            inp.pick(STRUCT_KEYS).to_string()
        };
        fields.insert(key, pb_value(inp, depth));
    }
    prost_types::Struct { fields }
}

/// A struct shaped like an inventory (`endpoints` list of endpoint
/// structs), each part possibly replaced by an arbitrary value.
pub fn pb_inventory(inp: &mut Input) -> prost_types::Struct {
    let s = |v: String| prost_types::Value {
        kind: Some(Kind::StringValue(v)),
    };
    let mut endpoints = Vec::new();
    for _ in 0..inp.below(8) {
        if inp.ratio(1, 10) {
            endpoints.push(pb_value(inp, 2));
            continue;
        }
        let spec = endpoint(inp);
        let mut fields = BTreeMap::new();
        fields.insert("address".to_string(), s(spec.address));
        if let Some(n) = spec.name {
            fields.insert("name".into(), s(n));
        }
        if !spec.labels.is_empty() {
            fields.insert(
                "labels".into(),
                prost_types::Value {
                    kind: Some(Kind::StructValue(prost_types::Struct {
                        fields: spec.labels.into_iter().map(|(k, v)| (k, s(v))).collect(),
                    })),
                },
            );
        }
        if let Some(l) = spec.locality {
            fields.insert("locality".into(), s(l));
        }
        if let Some(w) = spec.weight {
            fields.insert(
                "weight".into(),
                prost_types::Value {
                    kind: Some(Kind::NumberValue(f64::from(w))),
                },
            );
        }
        if let Some(b) = spec.backend {
            fields.insert("backend".into(), s(b));
        }
        if inp.ratio(1, 8) {
            let key = inp.pick(STRUCT_KEYS).to_string();
            fields.insert(key, pb_value(inp, 2));
        }
        endpoints.push(prost_types::Value {
            kind: Some(Kind::StructValue(prost_types::Struct { fields })),
        });
    }
    let mut fields = BTreeMap::new();
    fields.insert(
        "endpoints".to_string(),
        prost_types::Value {
            kind: Some(Kind::ListValue(prost_types::ListValue {
                values: endpoints,
            })),
        },
    );
    if inp.bool() {
        fields.insert("revision".into(), s(inp.string(6)));
    }
    prost_types::Struct { fields }
}
