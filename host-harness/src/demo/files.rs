//! The shared files: `envoy/demo/envoy.yaml` and `cds.yaml`, read as the
//! guide's pods and listeners, and localised for a loopback run.

use super::*;

/// One `in-ambient` pod, from the inventory in the cluster's metadata.
#[derive(Clone, Debug)]
pub(crate) struct Pod {
    pub(crate) name: String,
    /// `ip:port` as written in cds.yaml (the docker-compose address).
    pub(crate) address: String,
    pub(crate) labels: BTreeMap<String, String>,
}

impl Pod {
    pub(crate) fn label(&self, key: &str) -> &str {
        self.labels.get(key).map(String::as_str).unwrap_or("-")
    }
}

/// One listener of the bootstrap: a guide step with its plugin configuration.
#[derive(Clone, Debug)]
pub(crate) struct ListenerInfo {
    pub(crate) name: String,
    pub(crate) port: u64,
    pub(crate) plugin_config: String,
}

pub struct DemoFiles {
    pub(crate) bootstrap_path: PathBuf,
    pub(crate) cds_path: PathBuf,
    pub(crate) bootstrap: Value,
    /// The one cluster of cds.yaml.
    pub(crate) cluster: Value,
    pub(crate) cluster_name: String,
    pub(crate) pods: Vec<Pod>,
    pub(crate) listeners: Vec<ListenerInfo>,
    pub(crate) node_labels: BTreeMap<String, String>,
    pub(crate) admin_port: u64,
}

/// A file in JSON syntax with `#` comment lines (valid YAML; see the
/// header of envoy/demo/envoy.yaml).
pub(crate) fn read_commented_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).map_err(HarnessError::io(path.display().to_string()))?;
    let json: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::from_str(&json).map_err(|e| HarnessError::File {
        file: path.display().to_string(),
        message: format!(
            "{e} (this file must stay JSON with `#` comment lines only, see its header)"
        ),
    })
}

pub(crate) fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// The pods of cds.yaml's cluster: its inventory (in the metadata), which
/// must name the same pods as its `load_assignment`, the guide's included.
fn load_pods(cluster: &Value, cds_path: &Path) -> Result<Vec<Pod>> {
    let bad = |what: &str| HarnessError::File {
        file: cds_path.display().to_string(),
        message: what.to_string(),
    };
    let inventory = cluster
        .pointer(&format!(
            "/metadata/filter_metadata/{METADATA_NAMESPACE}/endpoints"
        ))
        .ok_or_else(|| bad("no inventory in metadata.filter_metadata[\"locality-failover\"]"))?;
    let specs: Vec<EndpointSpec> =
        serde_json::from_value(inventory.clone()).map_err(|e| bad(&e.to_string()))?;
    let pods: Vec<Pod> = specs
        .into_iter()
        .map(|s| Pod {
            name: s.name.clone().unwrap_or_else(|| s.address.clone()),
            address: s.address,
            labels: s.labels,
        })
        .collect();
    // load_assignment and the inventory must name the same pods.
    let mut assigned = BTreeMap::new();
    for group in cluster
        .pointer("/load_assignment/endpoints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for e in group
            .get("lb_endpoints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let host = str_at(e, "/endpoint/hostname")
                .unwrap_or_default()
                .to_string();
            let ip = str_at(e, "/endpoint/address/socket_address/address").unwrap_or_default();
            let port = e
                .pointer("/endpoint/address/socket_address/port_value")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            assigned.insert(host, format!("{ip}:{port}"));
        }
    }
    let inventory_map: BTreeMap<String, String> = pods
        .iter()
        .map(|p| (p.name.clone(), p.address.clone()))
        .collect();
    if assigned != inventory_map {
        return Err(bad(&format!(
            "load_assignment {assigned:?} and the inventory {inventory_map:?} differ"
        )));
    }
    for want in [ABC, DEF, XYZ, UVW] {
        if !inventory_map.contains_key(want) {
            return Err(bad(&format!("pod {want} (the guide's) is missing")));
        }
    }
    Ok(pods)
}

/// The bootstrap's listeners, one per guide step, each routing to
/// `cluster_name` through the wasm filter.
fn load_listeners(
    bootstrap: &Value,
    bootstrap_path: &Path,
    cluster_name: &str,
) -> Result<Vec<ListenerInfo>> {
    let bad = |message: String| HarnessError::File {
        file: bootstrap_path.display().to_string(),
        message,
    };
    let mut listeners = Vec::new();
    for l in bootstrap
        .pointer("/static_resources/listeners")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = str_at(l, "/name").unwrap_or_default().to_string();
        let port = l
            .pointer("/address/socket_address/port_value")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let hcm = l
            .pointer("/filter_chains/0/filters/0/typed_config")
            .ok_or_else(|| bad(format!("listener {name}: no connection manager")))?;
        let plugin_config = hcm
            .get("http_filters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|f| str_at(f, "/name") == Some("envoy.filters.http.wasm"))
            .and_then(|f| str_at(f, "/typed_config/config/configuration/value"))
            .ok_or_else(|| bad(format!("listener {name}: no wasm filter configuration")))?
            .to_string();
        let route_cluster = hcm
            .pointer("/route_config/virtual_hosts/0/routes/0/route/cluster")
            .and_then(Value::as_str);
        if route_cluster != Some(cluster_name) {
            return Err(bad(format!(
                "listener {name} routes to {route_cluster:?}, not to {cluster_name}"
            )));
        }
        listeners.push(ListenerInfo {
            name,
            port,
            plugin_config,
        });
    }
    for want in [
        LISTENER_STEP3,
        LISTENER_STEP4,
        LISTENER_GUIDE_DR,
        LISTENER_FIXED_DR,
    ] {
        if !listeners.iter().any(|l| l.name == want) {
            return Err(bad(format!("listener {want} is missing")));
        }
    }
    Ok(listeners)
}

impl DemoFiles {
    pub fn load(dir: &Path) -> Result<DemoFiles> {
        let bootstrap_path = dir.join("envoy.yaml");
        let cds_path = dir.join("cds.yaml");
        let bootstrap = read_commented_json(&bootstrap_path)?;
        let cds = read_commented_json(&cds_path)?;
        let bad = |what: &str| HarnessError::File {
            file: cds_path.display().to_string(),
            message: what.to_string(),
        };
        let clusters = cds
            .get("resources")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no resources"))?;
        let [cluster] = clusters.as_slice() else {
            return Err(bad("expected exactly one cluster"));
        };
        let cluster_name = str_at(cluster, "/name").ok_or_else(|| bad("cluster without a name"))?;
        let pods = load_pods(cluster, &cds_path)?;
        let listeners = load_listeners(&bootstrap, &bootstrap_path, cluster_name)?;
        let bad = |message: String| HarnessError::File {
            file: bootstrap_path.display().to_string(),
            message,
        };
        let node_labels: BTreeMap<String, String> = bootstrap
            .pointer("/node/metadata/LABELS")
            .cloned()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| bad(format!("node.metadata.LABELS: {e}")))?
            .unwrap_or_default();
        let admin_port = bootstrap
            .pointer("/admin/address/socket_address/port_value")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        Ok(DemoFiles {
            bootstrap_path,
            cds_path,
            bootstrap,
            cluster_name: cluster_name.to_string(),
            cluster: cluster.clone(),
            pods,
            listeners,
            node_labels,
            admin_port,
        })
    }

    /// What the demo reads, for `--describe` (and tests/shipping/).
    pub fn describe(&self) -> Value {
        let abs = |p: &Path| {
            std::fs::canonicalize(p)
                .unwrap_or_else(|_| p.to_path_buf())
                .to_string_lossy()
                .into_owned()
        };
        json!({
            "bootstrap": abs(&self.bootstrap_path),
            "cds": abs(&self.cds_path),
            "substituted": {
                "wasm": COMPOSE_WASM,
                "cds_path": COMPOSE_CDS,
                "watched_directory": COMPOSE_DIR,
                "access_log": COMPOSE_LOG,
                "listen_address": "0.0.0.0",
                "ports": "listener and admin ports become ephemeral",
                "pod_addresses": "each pod becomes a loopback upstream",
            },
            "admin_port": self.admin_port,
            "cluster": self.cluster_name,
            "node_labels": self.node_labels,
            "listeners": self.listeners.iter().map(|l| json!({
                "name": l.name, "port": l.port, "plugin_config": l.plugin_config,
            })).collect::<Vec<_>>(),
            "pods": self.pods.iter().map(|p| json!({
                "name": p.name, "address": p.address, "labels": p.labels,
            })).collect::<Vec<_>>(),
        })
    }

    pub(crate) fn listener(&self, name: &str) -> Option<&ListenerInfo> {
        self.listeners.iter().find(|l| l.name == name)
    }
}

/// Applies `f` to every value of a JSON tree (children first).
pub(crate) fn walk(v: &mut Value, f: &mut impl FnMut(&mut Value)) {
    match v {
        Value::Array(a) => a.iter_mut().for_each(|x| walk(x, f)),
        Value::Object(m) => m.values_mut().for_each(|x| walk(x, f)),
        _ => {}
    }
    f(v);
}

/// The bootstrap with the deployment-specific values of this run.
pub(crate) fn localize_bootstrap(bootstrap: &Value, layout: &Layout, wasm: &Path) -> Value {
    let mut b = bootstrap.clone();
    let strings = [
        (COMPOSE_WASM, wasm.to_string_lossy().into_owned()),
        (COMPOSE_CDS, layout.cds().to_string_lossy().into_owned()),
        (COMPOSE_DIR, layout.xds_dir().to_string_lossy().into_owned()),
        (
            COMPOSE_LOG,
            layout.access_log().to_string_lossy().into_owned(),
        ),
    ];
    walk(&mut b, &mut |v| {
        if let Value::String(s) = v {
            if let Some((_, to)) = strings.iter().find(|(from, _)| from == s) {
                *s = to.clone();
            }
        }
        if let Some(sa) = v.get_mut("socket_address") {
            if sa.get("address").and_then(Value::as_str) == Some("0.0.0.0") {
                sa["address"] = json!("127.0.0.1");
                sa["port_value"] = json!(0);
            }
        }
    });
    b
}

/// The cluster with the pods at their loopback addresses, keeping only
/// `present` pods (in `load_assignment` and in the inventory), at `revision`.
pub(crate) fn cluster_for(
    cluster: &Value,
    addresses: &BTreeMap<String, SocketAddr>,
    present: &BTreeSet<&str>,
    revision: u32,
) -> Value {
    let mut c = cluster.clone();
    walk(&mut c, &mut |v| {
        if let Some(sa) = v.get_mut("socket_address") {
            let key = format!(
                "{}:{}",
                sa.get("address")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                sa.get("port_value").and_then(Value::as_u64).unwrap_or(0)
            );
            if let Some(a) = addresses.get(&key) {
                sa["address"] = json!(a.ip().to_string());
                sa["port_value"] = json!(a.port());
            }
        }
    });
    if let Some(Value::Array(groups)) = c.pointer_mut("/load_assignment/endpoints") {
        for g in groups.iter_mut() {
            if let Some(Value::Array(eps)) = g.get_mut("lb_endpoints") {
                eps.retain(|e| {
                    str_at(e, "/endpoint/hostname").is_some_and(|h| present.contains(h))
                });
            }
        }
        groups.retain(|g| {
            g.get("lb_endpoints")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
        });
    }
    if let Some(inv) = c.pointer_mut(&format!("/metadata/filter_metadata/{METADATA_NAMESPACE}")) {
        inv["revision"] = json!(format!("demo-{revision}"));
        if let Some(Value::Array(eps)) = inv.get_mut("endpoints") {
            eps.retain(|e| str_at(e, "/name").is_some_and(|n| present.contains(n)));
            for e in eps.iter_mut() {
                let a = str_at(e, "/address")
                    .and_then(|a| addresses.get(a))
                    .copied();
                if let Some(a) = a {
                    e["address"] = json!(a.to_string());
                }
            }
        }
    }
    c
}
