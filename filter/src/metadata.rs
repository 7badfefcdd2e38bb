//! The inventory as Envoy hands it over in the cluster's metadata:
//! `xds.cluster_metadata` is a binary `envoy.config.core.v3.Metadata`; the
//! inventory sits under one `filter_metadata` namespace as a
//! `google.protobuf.Struct`:
//!
//! ```yaml
//! metadata:
//!   filter_metadata:
//!     locality-failover:
//!       revision: "42"            # optional; any string that changes with the list
//!       endpoints:
//!       - address: 10.0.1.5:8080
//!         name: in-ambient-7d8f9b6c54-abc12
//!         weight: 1
//!         labels: {topology.kubernetes.io/region: us-east-1, ...}
//! ```

use std::collections::HashMap;

use prost::Message;
use prost_types::value::Kind;

use crate::inventory::{EndpointSpec, Inventory, InventoryError};

/// `envoy.config.core.v3.Metadata`, the part the filter reads.
#[derive(Clone, PartialEq, Message)]
pub struct Metadata {
    #[prost(map = "string, message", tag = "1")]
    pub filter_metadata: HashMap<String, prost_types::Struct>,
}

/// Decodes the metadata bytes and reads the inventory in `namespace`,
/// moving the decoded strings into the endpoints (no intermediate JSON, so
/// a large inventory is not held three times in the VM's linear memory).
pub fn inventory_from_metadata(bytes: &[u8], namespace: &str) -> Result<Inventory, InventoryError> {
    let mut metadata =
        Metadata::decode(bytes).map_err(|e| InventoryError::Decode(format!("protobuf: {e}")))?;
    let mut inventory = metadata
        .filter_metadata
        .remove(namespace)
        .ok_or_else(|| InventoryError::MissingNamespace(namespace.to_string()))?;
    drop(metadata);
    let list = match inventory.fields.remove("endpoints").and_then(|v| v.kind) {
        Some(Kind::ListValue(l)) => l.values,
        Some(_) => return Err(InventoryError::Decode("`endpoints` is not a list".into())),
        None => return Err(InventoryError::Decode("no `endpoints` list".into())),
    };
    let mut specs = Vec::with_capacity(list.len());
    for (index, value) in list.into_iter().enumerate() {
        let bad = |message: String| InventoryError::BadEntry { index, message };
        let Some(Kind::StructValue(entry)) = value.kind else {
            return Err(bad("not an object".into()));
        };
        specs.push(endpoint_spec(entry).map_err(bad)?);
    }
    Inventory::from_owned(specs)
}

/// One endpoint from its Struct; the message names the field that is wrong.
fn endpoint_spec(entry: prost_types::Struct) -> Result<EndpointSpec, String> {
    let mut spec = EndpointSpec::default();
    let mut address = None;
    for (key, value) in entry.fields {
        let kind = value.kind;
        // A null field is an absent one, as in the JSON form.
        if matches!(kind, None | Some(Kind::NullValue(_))) {
            continue;
        }
        match key.as_str() {
            "address" => address = Some(string_field(&key, kind)?),
            "name" => spec.name = Some(string_field(&key, kind)?),
            "locality" => spec.locality = Some(string_field(&key, kind)?),
            "backend" => spec.backend = Some(string_field(&key, kind)?),
            "weight" => spec.weight = Some(weight_field(kind)?),
            "labels" => {
                let Some(Kind::StructValue(labels)) = kind else {
                    return Err("field `labels`: expected an object of strings".into());
                };
                for (label, v) in labels.fields {
                    let v = string_field(&format!("labels.{label}"), v.kind)?;
                    spec.labels.insert(label, v);
                }
            }
            // Unknown fields are ignored, as the JSON form does.
            _ => {}
        }
    }
    spec.address = address.ok_or("missing field `address`")?;
    Ok(spec)
}

fn string_field(name: &str, kind: Option<Kind>) -> Result<String, String> {
    match kind {
        Some(Kind::StringValue(s)) => Ok(s),
        _ => Err(format!("field `{name}`: expected a string")),
    }
}

fn weight_field(kind: Option<Kind>) -> Result<u32, String> {
    match kind {
        Some(Kind::NumberValue(n)) if n.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&n) => Ok(n as u32),
        _ => Err("field `weight`: expected a whole number".into()),
    }
}

/// Builds the metadata bytes for an inventory (the harness and the runner
/// publish inventories this way, as a control plane would).
pub fn metadata_for(namespace: &str, inventory: &serde_json::Value) -> Vec<u8> {
    let mut filter_metadata = HashMap::new();
    if let Kind::StructValue(s) = json_to_value(inventory).kind.unwrap_or(Kind::NullValue(0)) {
        filter_metadata.insert(namespace.to_string(), s);
    }
    Metadata { filter_metadata }.encode_to_vec()
}

pub fn struct_to_json(s: &prost_types::Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

/// Protobuf numbers are doubles; integral ones become JSON integers so that
/// `weight: 3` reads as the integer 3.
fn value_to_json(v: &prost_types::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => J::Null,
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                J::from(*n as i64)
            } else {
                serde_json::Number::from_f64(*n).map_or(J::Null, J::Number)
            }
        }
        Some(Kind::StringValue(s)) => J::String(s.clone()),
        Some(Kind::BoolValue(b)) => J::Bool(*b),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(l)) => J::Array(l.values.iter().map(value_to_json).collect()),
    }
}

fn json_to_value(v: &serde_json::Value) -> prost_types::Value {
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(*b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        J::String(s) => Kind::StringValue(s.clone()),
        J::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        J::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o
                .iter()
                .map(|(k, v)| (k.clone(), json_to_value(v)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn round_trips_an_inventory() {
        let inv = serde_json::json!({
            "revision": "7",
            "endpoints": [
                {"address": "10.0.0.1:80", "name": "a", "weight": 2,
                 "labels": {"topology.kubernetes.io/zone": "z1"}},
                {"address": "10.0.0.2:80"}
            ]
        });
        let bytes = metadata_for("locality-failover", &inv);
        let decoded = inventory_from_metadata(&bytes, "locality-failover").unwrap();
        assert_eq!(decoded.len(), 2);
        let a = decoded.get(0).unwrap();
        assert_eq!(a.name, "a");
        assert_eq!(a.weight, 2);
        assert_eq!(a.label("topology.kubernetes.io/zone"), "z1");
    }

    #[test]
    fn names_what_is_wrong() {
        let bytes = metadata_for("other", &serde_json::json!({"endpoints": []}));
        assert_eq!(
            inventory_from_metadata(&bytes, "locality-failover"),
            Err(InventoryError::MissingNamespace("locality-failover".into()))
        );
        assert!(matches!(
            inventory_from_metadata(&[0xff, 0xff, 0xff], "x"),
            Err(InventoryError::Decode(_))
        ));
        let frac = metadata_for("ns", &serde_json::json!({"endpoints": [{"address": "10.0.0.1:1", "weight": 1.5}]}));
        assert!(matches!(
            inventory_from_metadata(&frac, "ns"),
            Err(InventoryError::BadEntry { index: 0, .. })
        ));
    }
}
