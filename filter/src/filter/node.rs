//! The proxy's own labels, which ranking compares endpoints against.

use crate::config::{
    PriorityLabel, RankingRule, Settings, LABEL_CLUSTER, LABEL_HOSTNAME, LABEL_NETWORK,
    LABEL_REGION, LABEL_SUBZONE, LABEL_ZONE,
};
use crate::host::{decode, Host};
use crate::inventory::Labels;
use crate::properties;

/// The proxy's own labels: node labels (`xds.node.metadata.LABELS.<name>`,
/// for the topology labels and every `failoverPriority` label), then the
/// node locality for what they lack, Istio's `NETWORK` node metadata, and
/// last the configuration's `locality`, which wins.
pub(super) fn own_labels(host: &dyn Host, settings: &Settings) -> Labels {
    let mut labels = Labels::new();
    let read = |path: &[&str]| {
        host.property(path)
            .ok()
            .flatten()
            .and_then(|b| decode::string(&b))
            .filter(|s| !s.is_empty())
    };
    for name in wanted_labels(settings) {
        if let Some(v) = read(&properties::node_label(&name)) {
            labels.insert(name, v);
        }
    }
    for (label, leaf) in [
        (LABEL_REGION, "region"),
        (LABEL_ZONE, "zone"),
        (LABEL_SUBZONE, "sub_zone"),
    ] {
        if !labels.contains_key(label) {
            if let Some(v) = read(&properties::node_locality(leaf)) {
                labels.insert(label.to_string(), v);
            }
        }
    }
    if !labels.contains_key(LABEL_NETWORK) {
        if let Some(v) = read(properties::NODE_NETWORK) {
            labels.insert(LABEL_NETWORK.to_string(), v);
        }
    }
    for (k, v) in &settings.locality_override {
        labels.insert(k.clone(), v.clone());
    }
    labels
}

/// The topology labels, then any other label `failoverPriority` names.
fn wanted_labels(settings: &Settings) -> Vec<String> {
    let mut wanted: Vec<String> = [
        LABEL_NETWORK,
        LABEL_REGION,
        LABEL_ZONE,
        LABEL_SUBZONE,
        LABEL_CLUSTER,
        LABEL_HOSTNAME,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let RankingRule::FailoverPriority { labels: list, .. } = &settings.policy.ranking {
        for PriorityLabel { name, .. } in list {
            if !wanted.contains(name) {
                wanted.push(name.clone());
            }
        }
    }
    wanted
}
