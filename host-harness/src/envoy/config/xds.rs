//! The pieces both modes are built from: the bootstrap's listener, admin and
//! access log, CDS/EDS files, load assignments, and atomic file writes.

use super::*;

/// A generated configuration: the bootstrap and the initial xDS resources.
#[derive(Clone, Debug, PartialEq)]
pub struct Generated {
    pub bootstrap: Value,
    /// Filter mode: the CDS file's clusters.
    pub clusters: Option<Vec<Value>>,
    /// Native mode: the EDS file's load assignment.
    pub load_assignment: Option<Value>,
}

impl Generated {
    /// Writes the bootstrap and the initial xDS files (version "1").
    pub fn write(&self, layout: &Layout) -> io::Result<()> {
        std::fs::create_dir_all(layout.xds_dir())?;
        write_atomically(&layout.bootstrap(), &pretty(&self.bootstrap))?;
        if let Some(c) = &self.clusters {
            write_atomically(&layout.cds(), &pretty(&cds_file("1", c)))?;
        }
        if let Some(l) = &self.load_assignment {
            write_atomically(&layout.eds(), &pretty(&eds_file("1", l)))?;
        }
        Ok(())
    }
}

pub(super) fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// A CDS file (`DiscoveryResponse`) holding `clusters`.
pub fn cds_file(version: &str, clusters: &[Value]) -> Value {
    let resources: Vec<Value> = clusters
        .iter()
        .map(|c| with_type(c, TYPE_CLUSTER))
        .collect();
    json!({ "version_info": version, "resources": resources })
}

/// An EDS file (`DiscoveryResponse`) holding one `ClusterLoadAssignment`.
pub fn eds_file(version: &str, load_assignment: &Value) -> Value {
    json!({ "version_info": version, "resources": [with_type(load_assignment, TYPE_CLA)] })
}

pub(super) fn with_type(v: &Value, type_url: &str) -> Value {
    let mut m = Map::new();
    m.insert("@type".into(), json!(type_url));
    if let Value::Object(o) = v {
        for (k, x) in o {
            m.insert(k.clone(), x.clone());
        }
    }
    Value::Object(m)
}

/// Writes `contents` to a temporary file beside `path`, then renames it onto
/// `path` (an atomic replace, and the "moved to" event Envoy's
/// `watched_directory` reacts to).
pub fn write_atomically(path: &Path, contents: &str) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

/// Protobuf JSON duration: `"10s"`, `"0.250s"`.
pub fn duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        let s = format!("{}.{:09}", d.as_secs(), d.subsec_nanos());
        format!("{}s", s.trim_end_matches('0'))
    }
}

pub(super) fn socket_address(a: &SocketAddr) -> Value {
    json!({ "socket_address": { "address": a.ip().to_string(), "port_value": a.port() } })
}

/// A group of endpoints: (priority, (region, zone, sub_zone)).
pub type GroupKey = (u32, (String, String, String));

/// Endpoints grouped by `key`, the groups in order of first appearance
/// and then (a stable sort) of priority, as istiod's `endpoint_builder.go`
/// orders its `LocalityLbEndpoints`.
pub fn group_endpoints<'a>(
    endpoints: impl IntoIterator<Item = &'a Endpoint>,
    key: impl Fn(&Endpoint) -> GroupKey,
) -> Vec<(GroupKey, Vec<&'a Endpoint>)> {
    let mut groups: Vec<(GroupKey, Vec<&Endpoint>)> = Vec::new();
    for e in endpoints {
        let key = key(e);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(e),
            None => groups.push((key, vec![e])),
        }
    }
    groups.sort_by_key(|((p, _), _)| *p);
    groups
}

/// An endpoint's (region, zone, sub_zone), from its topology labels.
pub fn locality_of(e: &Endpoint) -> (String, String, String) {
    let get = |k: &str| e.labels.get(k).cloned().unwrap_or_default();
    (get(LABEL_REGION), get(LABEL_ZONE), get(LABEL_SUBZONE))
}

/// A `ClusterLoadAssignment`. With `by_priority`: one `LocalityLbEndpoints`
/// per (priority, locality), in order of priority then first appearance;
/// otherwise all endpoints in one group at priority 0. With
/// `locality_weights`, each group carries a `load_balancing_weight`.
pub(super) fn load_assignment(
    cluster: &str,
    endpoints: Vec<&Endpoint>,
    by_priority: bool,
    locality_weights: bool,
) -> Value {
    let groups = group_endpoints(endpoints, |e| {
        if by_priority {
            (e.priority, locality_of(e))
        } else {
            (0, Default::default())
        }
    });
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|((priority, (region, zone, sub_zone)), members)| {
            let lb_endpoints: Vec<Value> = members
                .iter()
                .map(|e| {
                    json!({
                        "endpoint": { "address": socket_address(&e.address), "hostname": e.name },
                        "load_balancing_weight": e.weight.max(1),
                    })
                })
                .collect();
            let mut g = json!({ "lb_endpoints": lb_endpoints });
            if locality_weights {
                let weight = members
                    .first()
                    .and_then(|e| e.locality_weight)
                    .unwrap_or_else(|| members.iter().map(|e| e.weight.max(1)).sum());
                g["load_balancing_weight"] = json!(weight.max(1));
            }
            if priority > 0 {
                g["priority"] = json!(priority);
            }
            if !(region.is_empty() && zone.is_empty() && sub_zone.is_empty()) {
                g["locality"] = json!({ "region": region, "zone": zone, "sub_zone": sub_zone });
            }
            g
        })
        .collect();
    json!({ "cluster_name": cluster, "endpoints": groups })
}

pub(super) fn admin(frontend: &Frontend) -> Value {
    json!({ "address": { "socket_address": { "address": "127.0.0.1", "port_value": frontend.admin_port } } })
}

/// A file access logger writing `format` lines to `path`.
pub fn file_log(path: &Path, format: &str) -> Value {
    json!({
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": TYPE_FILE_LOG,
            "path": path.to_string_lossy(),
            "log_format": { "text_format_source": { "inline_string": format } }
        }
    })
}

pub(super) fn listener(
    frontend: &Frontend,
    layout: &Layout,
    mut route: Value,
    retry: Option<&RetryPolicy>,
    mut http_filters: Vec<Value>,
) -> Value {
    route["timeout"] = json!(duration(frontend.route_timeout));
    if let Some(r) = retry {
        route["retry_policy"] = r.to_json();
    }
    let log_path = frontend
        .access_log
        .clone()
        .unwrap_or_else(|| layout.access_log());
    http_filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {
            "@type": TYPE_ROUTER,
            "upstream_log": [file_log(&log_path, UPSTREAM_FORMAT)]
        }
    }));
    let mut l = json!({
        "name": LISTENER_NAME,
        "address": socket_address(&SocketAddr::from(([127, 0, 0, 1], frontend.listener_port))),
        "filter_chains": [{ "filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": TYPE_HCM,
                "stat_prefix": LISTENER_NAME,
                // The client learns each request's id and can find its log lines.
                "always_set_request_id_in_response": true,
                "access_log": [file_log(&log_path, DOWNSTREAM_FORMAT)],
                "route_config": {
                    "name": "local",
                    // Clusters come from CDS after the listener is built.
                    "validate_clusters": false,
                    "virtual_hosts": [{
                        "name": "all",
                        "domains": ["*"],
                        // `x-envoy-attempt-count` on every answer, written
                        // by the router over any upstream value: what
                        // `steering.attemptCount: responseHeader` reads.
                        "include_attempt_count_in_response": true,
                        "routes": [{ "match": { "prefix": "/" }, "route": route }]
                    }]
                },
                "http_filters": http_filters
            }
        }]}]
    });
    if frontend.exact_balance {
        l["connection_balance_config"] = json!({ "exact_balance": {} });
        l["enable_reuse_port"] = json!(false);
    }
    l
}
