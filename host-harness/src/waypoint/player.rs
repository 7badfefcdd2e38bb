//! `--mode waypoint`: a scenario played on the waypoint-shaped Envoy.
//!
//! The filter is configured with the scenario's `trafficPolicy` /
//! `trafficDistribution` only (plus `inventory: envoy` and `steering:
//! stateful-session`): no endpoint, no locality. It learns the pods from
//! Envoy's admin, as on a real waypoint; the runner changes them only
//! through the EDS file, re-ranked as istiod would for the present pods.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use locality_failover::config::{Settings, LABEL_CLUSTER, LABEL_NETWORK};
use serde_json::{json, Value};

use super::eds::{self, CONNECT_ORIGINATE, INNER_CONNECT_ORIGINATE};
use super::golden::{Golden, SERVICE_CLUSTER};
use super::render::{self, RenderInput};
use crate::envoy::config::{
    Endpoint, Layout, NativeModeConfig, LABEL_REGION, LABEL_SUBZONE, LABEL_ZONE,
};
use crate::envoy::RetryPolicy;
use crate::error::{HarnessError, Result};
use crate::real::native_player::ENVOY_UPDATE_MERGE_WINDOW;
use crate::real::native_player::{lb_policy, outlier_detection, ranked_endpoints};
use crate::real::player::RealEnvoy;
use crate::real::rig::{Rig, XDS_TIMEOUT};
use crate::scenario::Scenario;

/// The waypoint's identity as istio-proxy writes it (the golden proxy).
const NODE_ID: &str =
    "waypoint~10.10.0.2~httpbin-waypoint-6c7d8e9f0a-wp001.httpbin~httpbin.svc.cluster.local";

pub struct WaypointPlayer {
    rig: Rig,
    layout: Layout,
    scenario: Scenario,
    settings: Settings,
    /// The proxy's labels istiod ranks with.
    labels: BTreeMap<String, String>,
    remote: BTreeSet<String>,
    present: BTreeSet<String>,
    version: u64,
    /// The service cluster's stats name.
    stat_name: String,
    /// Real time the filter needs to see an EDS change (its poll period,
    /// twice, plus a margin).
    inventory_lag: Duration,
    /// The filter's VMs: one per worker, one on Envoy's main thread.
    vms: u64,
}

/// The filter's count of inventories adopted (each worker's VM counts its own).
fn inventory_updates(rig: &Rig) -> u64 {
    rig.envoy
        .stat("wasmcustom.locality_failover.inventory_updates")
        .unwrap_or(0)
}

/// Waits until the filter counted `target` adoptions; false on timeout.
fn wait_adopted(rig: &Rig, target: u64, timeout: Duration) -> bool {
    rig.envoy
        .wait_for(timeout, |_| inventory_updates(rig) >= target)
}

/// One request outside the scenario, on a connection of its own: the
/// filter polls the clusters requests were routed to (its default, as in
/// `envoy/istio/waypoint.yaml`), so until one request went through, it
/// knows none and leaves requests to Envoy. This one goes to Envoy's own
/// LB (a healthy pod answers); it counts in no step.
fn warm_up(rig: &Rig) -> Result<()> {
    let listener = rig
        .envoy
        .listener()
        .map_err(HarnessError::envoy("warm-up"))?;
    let mut conn = crate::envoy::HttpConnection::connect(listener, Duration::from_secs(10))
        .map_err(HarnessError::io("warm-up connection"))?;
    let r = conn
        .get("/", &[])
        .map_err(HarnessError::io("warm-up request"))?;
    if r.status >= 500 {
        return Err(HarnessError::Traffic(format!(
            "warm-up request answered {}",
            r.status
        )));
    }
    Ok(())
}

/// What the runner decided about the proxy's locality: None (the node has
/// none, the filter infers it from the priority-0 hosts) or the locality
/// given to the node, with why.
pub fn node_locality(
    client: &BTreeMap<String, String>,
    ranked: &[Endpoint],
) -> Option<(BTreeMap<String, String>, String)> {
    let loc = |l: &BTreeMap<String, String>| {
        [LABEL_REGION, LABEL_ZONE, LABEL_SUBZONE].map(|k| l.get(k).cloned().unwrap_or_default())
    };
    let p0: BTreeSet<[String; 3]> = ranked
        .iter()
        .filter(|e| e.priority == 0)
        .map(|e| loc(&e.labels))
        .collect();
    let own = loc(client);
    if p0.len() == 1 && p0.contains(&own) {
        return None;
    }
    let why = if p0.len() > 1 {
        format!("the priority-0 pods span {} localities", p0.len())
    } else {
        "no priority-0 pod is in the waypoint's own locality".to_string()
    };
    let keep = [LABEL_REGION, LABEL_ZONE, LABEL_SUBZONE];
    Some((
        client
            .iter()
            .filter(|(k, _)| keep.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        why,
    ))
}

/// The node: id, Istio's metadata (NAMESPACE, NETWORK, CLUSTER_ID, the
/// waypoint pod's labels, which carry no topology), a locality only when
/// `locality` is given.
fn node(client: &BTreeMap<String, String>, locality: Option<&BTreeMap<String, String>>) -> Value {
    let mut metadata = json!({
        "NAMESPACE": "httpbin",
        "CLUSTER_ID": client.get(LABEL_CLUSTER).map_or("cluster1", String::as_str),
        "LABELS": {
            "gateway.networking.k8s.io/gateway-name": "httpbin-waypoint",
            "gateway.istio.io/managed": "istio.io-mesh-controller",
        },
    });
    if let Some(n) = client.get(LABEL_NETWORK) {
        metadata["NETWORK"] = json!(n);
    }
    let mut node = json!({ "id": NODE_ID, "cluster": "httpbin-waypoint.httpbin",
                           "metadata": metadata });
    if let Some(l) = locality {
        let get = |k: &str| l.get(k).cloned().unwrap_or_default();
        node["locality"] = json!({ "region": get(LABEL_REGION), "zone": get(LABEL_ZONE),
                                   "sub_zone": get(LABEL_SUBZONE) });
    }
    node
}

/// The inbound-vip cluster's DestinationRule fields, as the native mode
/// (Istio's applyOutlierDetection / applyLoadBalancer) writes them.
fn cluster_policy(settings: &Settings, layout: &Layout, scale: f64) -> Value {
    let mut cfg = NativeModeConfig::new(Vec::new());
    cfg.lb_policy = lb_policy(settings.policy.lb);
    cfg.healthy_panic_threshold = Some(f64::from(settings.policy.panic_threshold));
    cfg.outlier = settings.policy.outlier.as_ref().map(outlier_detection);
    cfg.update_merge_window = Some(ENVOY_UPDATE_MERGE_WINDOW.mul_f64(scale));
    let c = cfg.cluster(layout);
    let mut out = serde_json::Map::new();
    for key in ["outlier_detection", "lb_policy", "common_lb_config"] {
        if let Some(v) = c.get(key) {
            out.insert(key.to_string(), v.clone());
        }
    }
    Value::Object(out)
}

/// The waypoint's bootstrap and CDS as istiod renders them (the golden
/// case), with the filter, the node (its locality only when given) and the
/// retries.
fn render_files(
    scenario: &Scenario,
    start: &Start,
    settings: &Settings,
    layout: &Layout,
    locality: Option<&BTreeMap<String, String>>,
) -> Result<render::Rendered> {
    let retry = scenario.retries.as_ref().map(|r| {
        RetryPolicy {
            previous_hosts: true,
            ..RetryPolicy::new(r.attempts, r.retry_on.join(","))
        }
        .to_json()
    });
    let input = RenderInput {
        golden: start.golden,
        layout,
        plugin_config: start.plugin_config.to_string(),
        wasm: Some(start.wasm),
        admin_port: render::free_port().map_err(HarnessError::io("admin port"))?,
        node: node(&scenario.client_labels, locality),
        cluster_policy: cluster_policy(settings, layout, start.scale),
        retry,
    };
    render::render(&input).map_err(|shape| HarnessError::File {
        file: format!("tests/golden/istiod/{}", start.golden.case),
        message: shape.to_string(),
    })
}

/// Envoy names a pod by its internal addresses (one per CONNECT
/// listener): each becomes an alias of the pod's name.
fn alias_internal_addresses(rig: &mut Rig, scenario: &Scenario) -> Result<()> {
    for e in &scenario.endpoints {
        let addr = rig.addr(&e.name)?.to_string();
        for listener in [CONNECT_ORIGINATE, INNER_CONNECT_ORIGINATE] {
            rig.alias(eds::host_name(listener, &addr), e.name.clone());
        }
    }
    Ok(())
}

/// Sends the warm-up request, then waits until every filter VM adopted its
/// first inventory (said, not fatal, when one did not); returns how many
/// VMs there are: one per worker and one on the main thread.
fn first_inventories(rig: &Rig, scenario: &Scenario, inventory_lag: Duration) -> Result<u64> {
    let vms = scenario.workers.max(1) as u64 + 1;
    let before = inventory_updates(rig);
    warm_up(rig)?;
    if !wait_adopted(rig, before + vms, inventory_lag * 10) {
        eprintln!(
            "waypoint mode, {}: the filter did not report its first inventory on every worker; playing on",
            scenario.name
        );
    }
    Ok(vms)
}

/// What [`WaypointPlayer::start`] needs besides the scenario.
pub struct Start<'a> {
    pub golden: &'a Golden,
    /// The filter's plugin configuration (JSON).
    pub plugin_config: Value,
    /// The scenario's configuration with its durations scaled (ranking,
    /// Envoy's outlier detection).
    pub scaled_config: &'a Value,
    pub wasm: &'a std::path::Path,
    pub scale: f64,
    pub shape: super::applicability::Shape,
    pub inventory_lag: Duration,
}

impl WaypointPlayer {
    pub fn start(scenario: &Scenario, start: Start) -> Result<WaypointPlayer> {
        let settings = Settings::from_bytes(start.scaled_config.to_string().as_bytes())?;
        let mut labels = scenario.client_labels.clone();
        for (k, v) in &settings.locality_override {
            labels.insert(k.clone(), v.clone());
        }
        let (upstreams, dir) = Rig::upstreams(scenario, "waypoint")?;
        let layout = Layout::new(dir.path());
        let present: BTreeSet<String> = scenario.endpoints.iter().map(|e| e.name.clone()).collect();
        let remote = super::applicability::remote_in(scenario, start.shape);
        let (ranked, _) = ranked_endpoints(scenario, &settings, &labels, &present, |n| {
            upstreams.addr(n)
        })?;
        let locality = node_locality(&scenario.client_labels, &ranked);
        if let Some((l, why)) = &locality {
            eprintln!(
                "waypoint mode, {}: {why}, so the node gets the waypoint's locality {l:?} (the filter cannot infer it)",
                scenario.name
            );
        }
        let node_locality = locality.as_ref().map(|(l, _)| l);
        let generated = render_files(scenario, &start, &settings, &layout, node_locality)?
            .generated(eds::load_assignment(SERVICE_CLUSTER, &ranked, &remote));
        let mut rig = Rig::start(
            scenario,
            "waypoint",
            upstreams,
            dir,
            &generated,
            start.scale,
        )?;
        // Envoy's own outlier detection ejects on its main thread.
        rig.settle = true;
        alias_internal_addresses(&mut rig, scenario)?;
        let vms = first_inventories(&rig, scenario, start.inventory_lag)?;
        rig.start_clock(rig.envoy_sweeps(SERVICE_CLUSTER, settings.policy.outlier.as_ref()));
        let player = WaypointPlayer {
            rig,
            layout,
            scenario: scenario.clone(),
            settings,
            labels,
            remote,
            present,
            version: 1,
            stat_name: start.golden.stat_name(SERVICE_CLUSTER),
            inventory_lag: start.inventory_lag,
            vms,
        };
        Ok(player)
    }

    /// Rewrites the EDS file for the present pods, ranked again as istiod
    /// would; waits until Envoy applied it and the filter polled it.
    fn publish(&mut self) -> Result<()> {
        let rig = &self.rig;
        let (ranked, _) = ranked_endpoints(
            &self.scenario,
            &self.settings,
            &self.labels,
            &self.present,
            |n| rig.upstreams.addr(n),
        )?;
        self.version += 1;
        let cla = eds::load_assignment(SERVICE_CLUSTER, &ranked, &self.remote);
        let before = inventory_updates(&self.rig);
        eds::apply(
            &self.rig.envoy,
            &self.layout,
            &self.stat_name,
            &cla,
            self.version,
            XDS_TIMEOUT,
        )?;
        if !wait_adopted(&self.rig, before + self.vms, self.inventory_lag) {
            eprintln!(
                "waypoint mode, {}: EDS version {}: not every worker reported the new inventory within {:?}",
                self.scenario.name, self.version, self.inventory_lag
            );
        }
        Ok(())
    }
}

impl WaypointPlayer {
    /// The running Envoy (tests).
    pub fn envoy(&self) -> &crate::envoy::EnvoyProcess {
        &self.rig.envoy
    }

    /// The loopback pods (tests).
    pub fn upstreams(&self) -> &crate::envoy::Upstreams {
        &self.rig.upstreams
    }
}

impl RealEnvoy for WaypointPlayer {
    fn parts(&mut self) -> (&Scenario, &mut BTreeSet<String>, &mut Rig) {
        (&self.scenario, &mut self.present, &mut self.rig)
    }

    fn publish(&mut self) -> Result<()> {
        WaypointPlayer::publish(self)
    }

    /// The pods Envoy's own outlier detection ejected (`/clusters`).
    fn ejected_now(&mut self) -> Vec<String> {
        let hosts = eds::hosts(&self.rig.envoy, SERVICE_CLUSTER).unwrap_or_default();
        let hosts = hosts.iter().map(|h| (h.id.as_str(), h.outlier_ejected));
        self.rig.ejected_names(hosts)
    }
}
