//! The upstream endpoints the filter chooses from: address, labels, weight.
//!
//! Plain data, validated once when it arrives (from plugin configuration or
//! from the cluster's metadata) and then shared read-only. Labels follow
//! Istio's augmentation: an endpoint's `locality` (`region/zone/subzone`)
//! fills the topology labels it does not set itself.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{LABEL_REGION, LABEL_SUBZONE, LABEL_ZONE};

pub type Labels = BTreeMap<String, String>;

/// Most endpoints one inventory may hold; more is refused, not truncated.
pub const MAX_ENDPOINTS: usize = 100_000;
/// Largest endpoint weight (Envoy sums weights per priority in 32 bits).
pub const MAX_WEIGHT: u32 = 1_000_000;

/// One endpoint as written in configuration or cluster metadata.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSpec {
    /// `ip:port`, as Envoy knows the host.
    pub address: String,
    /// Reported in logs and scenario results; defaults to the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `null` reads as no labels, as in the metadata (Struct) form.
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: Labels,
    /// `region/zone/subzone`, as Istio writes a locality.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Route-header mode: the backend (Envoy cluster or Kubernetes Service)
    /// that reaches this endpoint's locality.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Labels, D::Error> {
    Ok(Option::<Labels>::deserialize(d)?.unwrap_or_default())
}

/// A validated endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub address: String,
    /// Shared between endpoints with the same labels (an inventory has a
    /// handful of distinct label sets, about one per locality).
    pub labels: Arc<Labels>,
    pub weight: u32,
    pub backend: Option<String>,
    /// `false` when Envoy itself holds the host unavailable (EDS
    /// UNHEALTHY/DRAINING/TIMEOUT or its own outlier ejection, read from the
    /// admin): it stays in the priority's host count, as in Envoy's balancer,
    /// but is never picked.
    pub healthy: bool,
}

impl Endpoint {
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map(String::as_str).unwrap_or("")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    #[error("the inventory is empty")]
    Empty,
    #[error("{0} endpoints, more than the {MAX_ENDPOINTS} accepted")]
    TooMany(usize),
    #[error("endpoints[{index}].address = {value:?}: not an ip:port nor envoy://<listener>/<id>")]
    BadAddress { index: usize, value: String },
    #[error("endpoints[{index}].address = {value:?}: listed twice")]
    Duplicate { index: usize, value: String },
    #[error("endpoints[{index}].weight = {value}: must be 1..={MAX_WEIGHT}")]
    BadWeight { index: usize, value: u32 },
    #[error("endpoints[{index}].locality = {value:?}: more than region/zone/subzone")]
    BadLocality { index: usize, value: String },
    #[error("endpoints[{index}]: {message}")]
    BadEntry { index: usize, message: String },
    #[error("metadata namespace {0:?} is missing")]
    MissingNamespace(String),
    #[error("metadata: {0}")]
    Decode(String),
}

/// The endpoints, in the order they were given (the order Envoy would see
/// them in its host set, which round robin follows).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    endpoints: Vec<Endpoint>,
}

impl Inventory {
    /// Validates every entry; one bad entry refuses the whole inventory, so a
    /// half-written update never replaces a good one.
    pub fn from_specs(specs: &[EndpointSpec]) -> Result<Inventory, InventoryError> {
        Inventory::from_owned(specs.to_vec())
    }

    /// As [`Inventory::from_specs`], taking the specs by value so nothing is
    /// copied (a 10,000-endpoint update allocates once per field, not twice).
    pub fn from_owned(specs: Vec<EndpointSpec>) -> Result<Inventory, InventoryError> {
        if specs.is_empty() {
            return Err(InventoryError::Empty);
        }
        if specs.len() > MAX_ENDPOINTS {
            return Err(InventoryError::TooMany(specs.len()));
        }
        let mut builder = InventoryBuilder::with_capacity(specs.len());
        for (index, spec) in specs.into_iter().enumerate() {
            builder.push(index, spec)?;
        }
        Ok(builder.finish())
    }

    /// Parses the JSON form: `{"endpoints": [...]}` or a bare array.
    pub fn from_json(value: &serde_json::Value) -> Result<Inventory, InventoryError> {
        let list = match value {
            serde_json::Value::Array(_) => value,
            serde_json::Value::Object(map) => map
                .get("endpoints")
                .ok_or_else(|| InventoryError::Decode("no `endpoints` list".into()))?,
            _ => {
                return Err(InventoryError::Decode(
                    "expected an object or a list".into(),
                ))
            }
        };
        let items = list
            .as_array()
            .ok_or_else(|| InventoryError::Decode("`endpoints` is not a list".into()))?;
        let mut specs = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let spec = EndpointSpec::deserialize(item).map_err(|e| InventoryError::BadEntry {
                index,
                message: e.to_string(),
            })?;
            specs.push(spec);
        }
        Inventory::from_owned(specs)
    }

    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<&Endpoint> {
        self.endpoints.get(index)
    }

    pub fn index_of(&self, address: &str) -> Option<usize> {
        self.endpoints.iter().position(|e| e.address == address)
    }

    /// Back to the written form (used by the harness and the runner to
    /// publish an inventory as cluster metadata).
    pub fn to_specs(&self) -> Vec<EndpointSpec> {
        self.endpoints
            .iter()
            .map(|e| EndpointSpec {
                address: e.address.clone(),
                name: Some(e.name.clone()),
                labels: (*e.labels).clone(),
                locality: None,
                weight: Some(e.weight),
                backend: e.backend.clone(),
            })
            .collect()
    }
}

/// Validates endpoints one at a time (a decoder hands them over as it reads
/// them) and shares identical label sets between endpoints.
#[derive(Debug, Default)]
pub struct InventoryBuilder {
    seen: HashSet<String>,
    endpoints: Vec<Endpoint>,
    label_sets: HashSet<Arc<Labels>>,
}

impl InventoryBuilder {
    pub fn with_capacity(n: usize) -> InventoryBuilder {
        InventoryBuilder {
            seen: HashSet::with_capacity(n),
            endpoints: Vec::with_capacity(n),
            label_sets: HashSet::new(),
        }
    }

    /// Validates entry `index`; a bad entry refuses the whole inventory.
    pub fn push(&mut self, index: usize, spec: EndpointSpec) -> Result<(), InventoryError> {
        self.push_with_health(index, spec, true)
    }

    /// As [`InventoryBuilder::push`], for a host Envoy may hold unavailable.
    pub fn push_with_health(
        &mut self,
        index: usize,
        spec: EndpointSpec,
        healthy: bool,
    ) -> Result<(), InventoryError> {
        let mut endpoint = validate(index, spec, &mut self.label_sets)?;
        endpoint.healthy = healthy;
        if !self.seen.insert(endpoint.address.clone()) {
            return Err(InventoryError::Duplicate {
                index,
                value: endpoint.address,
            });
        }
        self.endpoints.push(endpoint);
        Ok(())
    }

    pub fn finish(mut self) -> Inventory {
        self.endpoints.shrink_to_fit();
        Inventory {
            endpoints: self.endpoints,
        }
    }
}

fn intern(labels: Labels, sets: &mut HashSet<Arc<Labels>>) -> Arc<Labels> {
    if let Some(shared) = sets.get(&labels) {
        return Arc::clone(shared);
    }
    let shared = Arc::new(labels);
    sets.insert(Arc::clone(&shared));
    shared
}

fn validate(
    index: usize,
    spec: EndpointSpec,
    label_sets: &mut HashSet<Arc<Labels>>,
) -> Result<Endpoint, InventoryError> {
    let address =
        normal_address(spec.address.trim()).ok_or_else(|| InventoryError::BadAddress {
            index,
            value: spec.address.clone(),
        })?;
    let weight = spec.weight.unwrap_or(1);
    if weight == 0 || weight > MAX_WEIGHT {
        return Err(InventoryError::BadWeight {
            index,
            value: weight,
        });
    }
    let mut labels = spec.labels;
    if let Some(locality) = &spec.locality {
        let parts: Vec<&str> = locality.split('/').collect();
        if parts.len() > 3 {
            return Err(InventoryError::BadLocality {
                index,
                value: locality.clone(),
            });
        }
        for (label, value) in [LABEL_REGION, LABEL_ZONE, LABEL_SUBZONE].iter().zip(parts) {
            if !value.is_empty() {
                labels
                    .entry((*label).to_string())
                    .or_insert_with(|| value.to_string());
            }
        }
    }
    Ok(Endpoint {
        name: spec.name.unwrap_or_else(|| address.clone()),
        address,
        labels: intern(labels, label_sets),
        weight,
        backend: spec.backend,
        healthy: true,
    })
}

/// An address as Envoy keys a host: `ip:port` (normalised, port > 0), or an
/// internal address `envoy://<listener>/<endpoint id>` (waypoint endpoints
/// are `envoy://connect_originate/<pod ip:port>`), kept verbatim. No
/// whitespace or comma (the override-host list is comma-separated).
fn normal_address(address: &str) -> Option<String> {
    if let Some(rest) = address.strip_prefix("envoy://") {
        let (listener, id) = rest.split_once('/')?;
        let clean = |s: &str| {
            !s.is_empty()
                && s.len() <= 253
                && !s.bytes().any(|b| b <= b' ' || b == b',' || b == 0x7f)
        };
        return (clean(listener) && clean(id)).then(|| address.to_string());
    }
    let parsed: SocketAddr = address.parse().ok()?;
    (parsed.port() != 0).then(|| parsed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn spec(address: &str) -> EndpointSpec {
        EndpointSpec {
            address: address.into(),
            ..Default::default()
        }
    }

    #[test]
    fn accepts_and_normalises() {
        let inv = Inventory::from_specs(&[EndpointSpec {
            address: "10.0.0.1:80".into(),
            locality: Some("us-east-1/us-east-1a".into()),
            ..Default::default()
        }])
        .unwrap();
        let e = inv.get(0).unwrap();
        assert_eq!(e.name, "10.0.0.1:80");
        assert_eq!(e.weight, 1);
        assert_eq!(e.label(LABEL_REGION), "us-east-1");
        assert_eq!(e.label(LABEL_ZONE), "us-east-1a");
        assert_eq!(e.label(LABEL_SUBZONE), "");
    }

    #[test]
    fn explicit_labels_beat_locality() {
        let mut s = spec("10.0.0.1:80");
        s.labels.insert(LABEL_REGION.into(), "r-label".into());
        s.locality = Some("r-loc/z".into());
        let inv = Inventory::from_specs(&[s]).unwrap();
        assert_eq!(inv.get(0).unwrap().label(LABEL_REGION), "r-label");
    }

    #[test]
    fn refuses_bad_entries_naming_them() {
        assert_eq!(Inventory::from_specs(&[]), Err(InventoryError::Empty));
        assert!(matches!(
            Inventory::from_specs(&[spec("10.0.0.1:80"), spec("nope")]),
            Err(InventoryError::BadAddress { index: 1, .. })
        ));
        assert!(matches!(
            Inventory::from_specs(&[spec("10.0.0.1:80"), spec("10.0.0.1:80")]),
            Err(InventoryError::Duplicate { index: 1, .. })
        ));
        let mut zero = spec("10.0.0.1:80");
        zero.weight = Some(0);
        assert!(matches!(
            Inventory::from_specs(&[zero]),
            Err(InventoryError::BadWeight { index: 0, value: 0 })
        ));
        let mut huge = spec("10.0.0.1:80");
        huge.weight = Some(u32::MAX);
        assert!(matches!(
            Inventory::from_specs(&[huge]),
            Err(InventoryError::BadWeight { .. })
        ));
        assert!(matches!(
            Inventory::from_specs(&[spec("10.0.0.1:0")]),
            Err(InventoryError::BadAddress { .. })
        ));
        let mut deep = spec("10.0.0.1:80");
        deep.locality = Some("a/b/c/d".into());
        assert!(matches!(
            Inventory::from_specs(&[deep]),
            Err(InventoryError::BadLocality { .. })
        ));
    }

    #[test]
    fn json_forms() {
        let v = serde_json::json!({"endpoints": [{"address": "[::1]:8080", "weight": 3}]});
        let inv = Inventory::from_json(&v).unwrap();
        assert_eq!(inv.get(0).unwrap().address, "[::1]:8080");
        assert_eq!(inv.get(0).unwrap().weight, 3);
        let bad = serde_json::json!({"endpoints": [{"address": 5}]});
        assert!(matches!(
            Inventory::from_json(&bad),
            Err(InventoryError::BadEntry { index: 0, .. })
        ));
        assert!(Inventory::from_json(&serde_json::json!("x")).is_err());
    }

    #[test]
    fn internal_addresses_are_kept_as_envoy_keys_them() {
        let inv =
            Inventory::from_specs(&[spec("envoy://connect_originate/10.1.2.3:8080")]).unwrap();
        assert_eq!(
            inv.get(0).unwrap().address,
            "envoy://connect_originate/10.1.2.3:8080"
        );
        assert!(inv.get(0).unwrap().healthy);
        for bad in [
            "envoy://",
            "envoy://x",
            "envoy:///10.0.0.1:80",
            "envoy://x/",
            "envoy://x/a,b",
            "envoy://x/a b",
        ] {
            assert!(
                matches!(
                    Inventory::from_specs(&[spec(bad)]),
                    Err(InventoryError::BadAddress { .. })
                ),
                "{bad}"
            );
        }
    }
}
