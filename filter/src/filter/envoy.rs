//! The root's side of `inventory.source: envoy`: on the tick, adopt what
//! was published and (one VM per Envoy, by lease) poll the admin; on the
//! answer, check, parse, publish. Never on the request path: requests only
//! note which cluster they were routed to.

use std::collections::HashMap;

use crate::admin::{parse_config_dump, AdminHost};
use crate::config::{EnvoySource, LABEL_NETWORK, LABEL_REGION, LABEL_SUBZONE, LABEL_ZONE};
use crate::host::{AdminGet, Host, LogLevel};
use crate::inventory::{Inventory, InventoryBuilder, InventoryError};
use crate::metrics::{Metric, Metrics};
use crate::outlier::nanos;
use crate::poll::{self, PollKeys};

use super::cluster::found_or_passthrough;
use super::routed::{routed, Routed};
use super::{fnv1a, Configured};

/// One VM's poller state.
pub(super) struct Poller {
    source: EnvoySource,
    keys: PollKeys,
    /// Lease holder id of this VM.
    me: u64,
    in_flight: Option<InFlight>,
    last_poll: Option<u64>,
    adopted_version: Option<u64>,
    /// Hash of what this VM last published: an unchanged answer is not
    /// published again, so the other VMs do not re-read it every period.
    published: Option<u64>,
    /// Per cluster: hash of the hosts last installed.
    adopted: HashMap<String, u64>,
    /// Routed clusters this VM already recorded (or found the list full).
    noted: Vec<String>,
    routed_error_logged: bool,
    locality_settled: bool,
}

struct InFlight {
    token: u32,
    sent_at: u64,
}

impl Poller {
    pub fn new(source: EnvoySource, prefix: &str, me: u64) -> Self {
        Poller {
            source,
            keys: PollKeys::new(prefix),
            me,
            in_flight: None,
            last_poll: None,
            adopted_version: None,
            published: None,
            adopted: HashMap::new(),
            noted: Vec::new(),
            routed_error_logged: false,
            locality_settled: false,
        }
    }

    fn lease_ttl(&self) -> u64 {
        nanos(self.source.poll_interval * 3 + self.source.timeout)
    }

    /// Counts every failure; logs each class of failure once per failing
    /// streak, per Envoy (the classes logged are kept in shared data: the
    /// lease may move), and once more when the admin answers well again.
    /// Under load Envoy reports one slow, oversize answer by turns as a
    /// timeout or a dropped answer: two lines, not one per poll.
    fn fail(&mut self, host: &mut dyn Host, metrics: &Metrics, failure: Failure) {
        let Failure(class, condition) = failure;
        metrics.inc(host, Metric::InventoryPollErrors);
        if poll::add_failure_class(host, &self.keys.condition, class) {
            host.log(
                LogLevel::Warn,
                &format!("locality-failover: envoy inventory: {condition}; keeping the last good inventory"),
            );
        }
    }

    fn recovered(&mut self, host: &mut dyn Host) {
        let failing =
            matches!(host.shared_data(&self.keys.condition), Ok((Some(v), _)) if !v.is_empty());
        if failing && poll::first_to_record(host, &self.keys.condition, "") {
            host.log(
                LogLevel::Info,
                "locality-failover: envoy inventory: the admin answers again",
            );
        }
    }
}

/// Why a poll failed: a class (what is logged once) and the log text.
pub(super) struct Failure(&'static str, String);

const NO_ANSWER: &str = "no answer";
const SHARED: &str = "shared data";

impl Configured {
    /// The tick: adopt a newer published inventory, then poll if due and
    /// this VM holds the lease.
    pub(super) fn envoy_tick(&mut self, host: &mut dyn Host, metrics: &Metrics, seed: u64) {
        self.adopt_published(host, metrics, seed);
        let Some(p) = self.poller.as_mut() else {
            return;
        };
        let now = host.now_nanos();
        if let Some(f) = &p.in_flight {
            // Envoy answers every call (a timeout is a local 504); this only
            // guards against an answer that never comes.
            if now.saturating_sub(f.sent_at) < p.lease_ttl() {
                return;
            }
            p.in_flight = None;
        }
        let interval = nanos(p.source.poll_interval);
        if p.last_poll
            .is_some_and(|t| now.saturating_sub(t) < interval / 4 * 3)
        {
            return;
        }
        match poll::take_lease(host, &p.keys, p.me, now, now.saturating_add(p.lease_ttl())) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => return p.fail(host, metrics, Failure(SHARED, format!("lease: {e}"))),
        }
        p.last_poll = Some(now);
        let clusters = if p.source.clusters.is_empty() {
            match poll::routed(host, &p.keys) {
                Ok(c) => c,
                Err(e) => {
                    return p.fail(
                        host,
                        metrics,
                        Failure(SHARED, format!("routed clusters: {e}")),
                    )
                }
            }
        } else {
            p.source.clusters.clone()
        };
        if clusters.is_empty() {
            return;
        }
        let names: Vec<&str> = clusters.iter().map(String::as_str).collect();
        let request = AdminGet::config_dump(&names);
        match host.dispatch_http_call(&p.source.admin_cluster, &request, p.source.timeout) {
            Ok(token) => {
                p.in_flight = Some(InFlight {
                    token,
                    sent_at: now,
                })
            }
            Err(e) => {
                let cluster = p.source.admin_cluster.clone();
                p.fail(
                    host,
                    metrics,
                    Failure("call", format!("cannot call cluster {cluster:?}: {e}")),
                );
            }
        }
    }

    /// The admin's answer: checked (status, size before reading), parsed,
    /// published, adopted. Anything wrong keeps the last good inventory.
    pub(super) fn envoy_answer(
        &mut self,
        host: &mut dyn Host,
        metrics: &Metrics,
        token: u32,
        body_size: usize,
        seed: u64,
    ) {
        let Some(p) = self.poller.as_mut() else {
            return;
        };
        if p.in_flight.as_ref().map(|f| f.token) != Some(token) {
            return;
        }
        p.in_flight = None;
        let clusters = match read_answer(host, &p.source, body_size) {
            Ok(c) => c,
            Err(condition) => return p.fail(host, metrics, condition),
        };
        p.recovered(host);
        let hash = fnv1a(&poll::encode(0, &clusters));
        if p.published == Some(hash) {
            return;
        }
        if let Err(e) = poll::publish(host, &p.keys, &clusters) {
            return p.fail(
                host,
                metrics,
                Failure(SHARED, format!("cannot publish: {e}")),
            );
        }
        p.published = Some(hash);
        self.adopt_published(host, metrics, seed);
    }

    /// Requests only note their cluster: `None` (left to Envoy) until the
    /// poller has published an inventory for it.
    pub(super) fn envoy_cluster_for_request(
        &mut self,
        host: &mut dyn Host,
        metrics: &Metrics,
    ) -> Option<usize> {
        let name = match routed(self.declared.as_mut(), host, metrics)? {
            Routed::Declared => {
                let name = &self.declared.as_ref()?.name;
                return found_or_passthrough(&mut self.clusters, host, metrics, name);
            }
            Routed::Read(name) => name,
        };
        if let Some(index) = found_or_passthrough(&mut self.clusters, host, metrics, &name) {
            return Some(index);
        }
        let p = self.poller.as_mut()?;
        if p.source.clusters.is_empty() && !p.noted.contains(&name) {
            match poll::record_routed(host, &p.keys, &name) {
                Ok(true) => p.noted.push(name),
                Ok(false) => {
                    host.log(LogLevel::Warn, &format!("locality-failover: envoy inventory: more than {} routed clusters; {name} is left to Envoy", poll::MAX_ROUTED));
                    p.noted.push(name);
                }
                Err(e) => {
                    // Retried by the next request; logged once per VM.
                    if !p.routed_error_logged {
                        p.routed_error_logged = true;
                        host.log(
                            LogLevel::Warn,
                            &format!("locality-failover: routed clusters: {e}"),
                        );
                    }
                    metrics.inc(host, Metric::HostErrors);
                }
            }
        }
        None
    }

    /// Installs every cluster of a newer published inventory whose hosts changed.
    fn adopt_published(&mut self, host: &mut dyn Host, metrics: &Metrics, seed: u64) {
        let Some(p) = self.poller.as_mut() else {
            return;
        };
        let version = match poll::version(host, &p.keys) {
            Ok(v) => v,
            Err(e) => {
                return p.fail(
                    host,
                    metrics,
                    Failure(SHARED, format!("published version: {e}")),
                )
            }
        };
        if version.is_none() || version == p.adopted_version {
            return;
        }
        let published = match poll::read_published(host, &p.keys) {
            Ok(Some(published)) => published,
            Ok(None) => {
                let why = "published inventory is corrupt".to_string();
                return p.fail(host, metrics, Failure(SHARED, why));
            }
            Err(e) => {
                return p.fail(
                    host,
                    metrics,
                    Failure(SHARED, format!("published inventory: {e}")),
                )
            }
        };
        p.adopted_version = Some(published.version);
        self.settle_locality(host, &published.clusters);
        for (name, hosts) in published.clusters {
            self.adopt_cluster(host, metrics, &name, &hosts, seed);
        }
    }

    fn adopt_cluster(
        &mut self,
        host: &mut dyn Host,
        metrics: &Metrics,
        name: &str,
        hosts: &[AdminHost],
        seed: u64,
    ) {
        let hash = fnv1a(&poll::encode(0, &[(String::new(), hosts.to_vec())]));
        let Some(p) = self.poller.as_mut() else {
            return;
        };
        if p.adopted.get(name) == Some(&hash) {
            return;
        }
        p.adopted.insert(name.to_string(), hash);
        let network = self.own_labels.get(LABEL_NETWORK).cloned();
        match inventory_of(hosts, network.as_deref()) {
            Ok(inventory) => {
                self.install(
                    host,
                    metrics,
                    name,
                    inventory,
                    seed ^ fnv1a(name.as_bytes()),
                );
                metrics.inc(host, Metric::InventoryUpdates);
            }
            Err(e) => {
                host.log(LogLevel::Warn, &format!("locality-failover: cluster {name}: inventory from envoy refused, keeping the last good one: {e}"));
                metrics.inc(host, Metric::InventoryErrors);
            }
        }
    }

    /// Item 2 of the locality order (`locality` in the configuration, then
    /// the node, then this): the locality Istio put at priority 0. Istio
    /// computes EDS priorities relative to this proxy, so priority 0 is its
    /// own locality. Settled once, before the first engine is built.
    fn settle_locality(&mut self, host: &mut dyn Host, clusters: &[(String, Vec<AdminHost>)]) {
        let Some(p) = self.poller.as_mut() else {
            return;
        };
        if p.locality_settled {
            return;
        }
        if self.own_labels.contains_key(LABEL_REGION) {
            p.locality_settled = true;
            return;
        }
        let Some((name, inferred)) = clusters
            .iter()
            .find_map(|(name, hosts)| Some((name, priority0_locality(hosts)?)))
        else {
            if clusters.iter().any(|(_, hosts)| !hosts.is_empty()) {
                p.locality_settled = true;
                let text = "unknown";
                if poll::first_to_record(host, &p.keys.locality, text) {
                    host.log(LogLevel::Warn, "locality-failover: the proxy's own locality is unknown (no `locality` in config, none on the node, and Istio's priority-0 hosts share no region): ranking treats its region/zone as empty");
                }
            }
            return;
        };
        p.locality_settled = true;
        let mut text = String::new();
        for (label, value) in [
            (LABEL_REGION, &inferred.0),
            (LABEL_ZONE, &inferred.1),
            (LABEL_SUBZONE, &inferred.2),
        ] {
            if let Some(v) = value {
                self.own_labels.insert(label.to_string(), v.clone());
                text.push_str(&format!(" {label}={v}"));
            }
        }
        let partial = if inferred.1.is_none() {
            " (priority-0 hosts span several zones: region only)"
        } else {
            ""
        };
        if !poll::first_to_record(host, &p.keys.locality, &text) {
            return;
        }
        // Warn, not info: the proxy's own locality is a guess an operator
        // should see at Envoy's default log level.
        host.log(
            LogLevel::Warn,
            &format!("locality-failover: own locality inferred from Istio's EDS priorities of {name}:{text}{partial}"),
        );
    }
}

/// Checks and parses the admin's answer.
fn read_answer(
    host: &mut dyn Host,
    source: &EnvoySource,
    body_size: usize,
) -> Result<Vec<(String, Vec<AdminHost>)>, Failure> {
    let cluster = &source.admin_cluster;
    // Envoy 1.40 hands over no header map (BadArgument) when it dropped an
    // answer larger than its async client's buffer (measured with 50 MB).
    let status = host.http_call_status().map_err(|e| {
        Failure(NO_ANSWER, format!(
            "no usable answer from cluster {cluster:?} ({e}): Envoy drops answers larger than its async-client buffer"
        ))
    })?;
    match status {
        // Envoy 1.40 answers a call that times out with a local 504
        // ("upstream request timeout"); no headers at all when it fails.
        None | Some(504) => {
            let timeout = source.timeout;
            let why = format!("no answer from cluster {cluster:?} within {timeout:?}");
            return Err(Failure(NO_ANSWER, why));
        }
        Some(200) => {}
        Some(code) => return Err(Failure("status", format!("the admin answered {code}"))),
    }
    let max = source.max_response_bytes;
    if body_size > max {
        let why =
            format!("the admin's answer is {body_size} bytes, more than maxResponseBytes {max}");
        return Err(Failure("too large", why));
    }
    let body = host
        .http_call_body(body_size)
        .map_err(|e| Failure(NO_ANSWER, format!("cannot read the admin's answer: {e}")))?
        .unwrap_or_default();
    if body.len() > max {
        let why = format!("the admin's answer is larger than maxResponseBytes {max}");
        return Err(Failure("too large", why));
    }
    parse_config_dump(&body)
        .map_err(|e| Failure("unreadable", format!("unreadable admin answer: {e}")))
}

/// The inventory of one cluster; hosts Envoy holds unavailable stay in it,
/// marked unhealthy.
fn inventory_of(
    hosts: &[AdminHost],
    own_network: Option<&str>,
) -> Result<Inventory, InventoryError> {
    if hosts.is_empty() {
        return Err(InventoryError::Empty);
    }
    let mut builder = InventoryBuilder::with_capacity(hosts.len());
    for (index, h) in hosts.iter().enumerate() {
        builder.push_with_health(index, h.to_spec(own_network), h.healthy)?;
    }
    Ok(builder.finish())
}

type Locality = (Option<String>, Option<String>, Option<String>);

/// The locality all priority-0 hosts share; region only when they share
/// just that; `None` when there is no priority-0 host or no common region.
fn priority0_locality(hosts: &[AdminHost]) -> Option<Locality> {
    let mut first: Option<&AdminHost> = None;
    let (mut same_zone, mut same_sub) = (true, true);
    for h in hosts.iter().filter(|h| h.priority == 0) {
        match first {
            None => first = Some(h),
            Some(f) => {
                if f.region != h.region {
                    return None;
                }
                same_zone &= f.zone == h.zone;
                same_sub &= same_zone && f.sub_zone == h.sub_zone;
            }
        }
    }
    let f = first?;
    let some = |s: &String| Some(s.clone()).filter(|s| !s.is_empty());
    let region = some(&f.region)?;
    Some((
        Some(region),
        if same_zone { some(&f.zone) } else { None },
        if same_sub { some(&f.sub_zone) } else { None },
    ))
}
