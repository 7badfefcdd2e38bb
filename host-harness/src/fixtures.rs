//! Shared test and demo fixtures, written once.
//!
//! [`guide`] is the topology of
//! `../shared/reference/multicluster-zone-region-failover-guide.txt`: four
//! `in-ambient` pods in two clusters (two networks), as `envoy/demo/cds.yaml`
//! and `envoy/docker-compose.yaml` deploy them; a test below checks it
//! against cds.yaml.

/// The guide's pods and its client (the cluster-1 waypoint).
pub mod guide {
    use std::collections::BTreeMap;

    use locality_failover::config::{LABEL_NETWORK, LABEL_REGION, LABEL_ZONE};

    /// One `in-ambient` pod.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Pod {
        pub name: &'static str,
        pub network: &'static str,
        pub region: &'static str,
        pub zone: &'static str,
        /// `ip:port` of its docker-compose container.
        pub address: &'static str,
    }

    impl Pod {
        /// The pod's network, region and zone labels.
        pub fn labels(&self) -> BTreeMap<String, String> {
            labels(self.network, self.region, self.zone)
        }
    }

    /// Cluster 1, us-east-1a: the client's zone.
    pub const ABC: Pod = Pod {
        name: "in-ambient-7d8f9b6c54-abc12",
        network: "cluster1-network",
        region: "us-east-1",
        zone: "us-east-1a",
        address: "10.10.0.15:8080",
    };
    /// Cluster 1, us-east-1b.
    pub const DEF: Pod = Pod {
        name: "in-ambient-7d8f9b6c54-def34",
        network: "cluster1-network",
        region: "us-east-1",
        zone: "us-east-1b",
        address: "10.10.1.8:8080",
    };
    /// Cluster 2, us-west-2a.
    pub const XYZ: Pod = Pod {
        name: "in-ambient-8e9f0c7d65-xyz98",
        network: "cluster2-network",
        region: "us-west-2",
        zone: "us-west-2a",
        address: "10.20.0.7:8080",
    };
    /// Cluster 2, us-west-2b.
    pub const UVW: Pod = Pod {
        name: "in-ambient-8e9f0c7d65-uvw56",
        network: "cluster2-network",
        region: "us-west-2",
        zone: "us-west-2b",
        address: "10.20.1.4:8080",
    };

    /// The four pods, in the order of cds.yaml.
    pub const PODS: [Pod; 4] = [ABC, DEF, XYZ, UVW];

    /// Network, region and zone labels, as Istio writes them.
    pub fn labels(network: &str, region: &str, zone: &str) -> BTreeMap<String, String> {
        [
            (LABEL_NETWORK, network),
            (LABEL_REGION, region),
            (LABEL_ZONE, zone),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The client's labels: the cluster-1 waypoint, in us-east-1a.
    pub fn client_labels() -> BTreeMap<String, String> {
        ABC.labels()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::guide;
    use crate::demo::DemoFiles;

    #[test]
    fn guide_topology_is_what_envoy_demo_cds_yaml_deploys() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../envoy/demo");
        let files = DemoFiles::load(&dir).expect("envoy/demo loads");
        let in_cds: Vec<(String, String, BTreeMap<String, String>)> = files
            .pods
            .iter()
            .map(|p| (p.name.clone(), p.address.clone(), p.labels.clone()))
            .collect();
        let fixture: Vec<(String, String, BTreeMap<String, String>)> = guide::PODS
            .iter()
            .map(|p| (p.name.to_string(), p.address.to_string(), p.labels()))
            .collect();
        assert_eq!(in_cds, fixture);
        assert_eq!(files.node_labels, guide::client_labels());
    }
}
