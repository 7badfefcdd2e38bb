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

use crate::inventory::{EndpointSpec, Inventory, InventoryBuilder, InventoryError};

/// `envoy.config.core.v3.Metadata`, the part the filter reads.
#[derive(Clone, PartialEq, Message)]
pub struct Metadata {
    #[prost(map = "string, message", tag = "1")]
    pub filter_metadata: HashMap<String, prost_types::Struct>,
}

/// Decodes the metadata bytes and reads the inventory in `namespace`.
///
/// The protobuf is walked in place: no `prost_types::Struct` tree is built
/// (about 2 KB per endpoint), each endpoint is validated as it is read, and
/// only the validated endpoints are kept, so a large inventory costs its
/// bytes plus its endpoints in the VM's linear memory (which never shrinks).
pub fn inventory_from_metadata(bytes: &[u8], namespace: &str) -> Result<Inventory, InventoryError> {
    let decode = |e: WireError| InventoryError::Decode(format!("protobuf: {}", e.0));
    // Metadata.filter_metadata (1): map<string, Struct>; the last entry wins.
    let mut found = None;
    for field in Fields::new(bytes) {
        match field.map_err(decode)? {
            (1, Wire::Bytes(entry)) => {
                let (key, value) = map_entry(entry).map_err(decode)?;
                if key == namespace.as_bytes() {
                    found = Some(value);
                }
            }
            (1, _) => return Err(decode(WireError("filter_metadata: wrong wire type".into()))),
            _ => {}
        }
    }
    let ns = found.ok_or_else(|| InventoryError::MissingNamespace(namespace.to_string()))?;
    let mut endpoints = None;
    for entry in struct_entries(ns) {
        let (key, value) = entry.map_err(decode)?;
        if key == b"endpoints" {
            endpoints = Some(value);
        }
    }
    let list = match endpoints.map(value_kind).transpose().map_err(decode)? {
        Some(WireKind::List(l)) => l,
        Some(_) => return Err(InventoryError::Decode("`endpoints` is not a list".into())),
        None => return Err(InventoryError::Decode("no `endpoints` list".into())),
    };
    let mut count = 0usize;
    for item in Fields::new(list) {
        match item.map_err(decode)? {
            (1, Wire::Bytes(_)) => count += 1,
            (1, _) => {
                return Err(decode(WireError(
                    "ListValue.values: wrong wire type".into(),
                )))
            }
            _ => {}
        }
    }
    if count == 0 {
        return Err(InventoryError::Empty);
    }
    if count > crate::inventory::MAX_ENDPOINTS {
        return Err(InventoryError::TooMany(count));
    }
    let mut builder = InventoryBuilder::with_capacity(count);
    let items = Fields::new(list).filter_map(|f| match f {
        Ok((1, Wire::Bytes(v))) => Some(v),
        _ => None,
    });
    for (index, item) in items.enumerate() {
        let spec =
            endpoint_spec(item).map_err(|message| InventoryError::BadEntry { index, message })?;
        builder.push(index, spec)?;
    }
    Ok(builder.finish())
}

/// One endpoint from its `Value`; the message names the field that is wrong.
fn endpoint_spec(value: &[u8]) -> Result<EndpointSpec, String> {
    let WireKind::Struct(fields) = value_kind(value).map_err(|e| e.0)? else {
        return Err("not an object".into());
    };
    let mut spec = EndpointSpec::default();
    let mut address = None;
    for entry in struct_entries(fields) {
        let (key, v) = entry.map_err(|e| e.0)?;
        // A null field is an absent one, as in the JSON form (and a later
        // duplicate key wins, as in a decoded map).
        if matches!(value_kind(v), Ok(WireKind::Null)) {
            match key {
                b"address" => address = None,
                b"name" => spec.name = None,
                b"locality" => spec.locality = None,
                b"backend" => spec.backend = None,
                b"weight" => spec.weight = None,
                b"labels" => spec.labels.clear(),
                _ => {}
            }
            continue;
        }
        match key {
            b"address" => address = Some(string_field("address", v)?),
            b"name" => spec.name = Some(string_field("name", v)?),
            b"locality" => spec.locality = Some(string_field("locality", v)?),
            b"backend" => spec.backend = Some(string_field("backend", v)?),
            b"weight" => spec.weight = Some(weight_field(v)?),
            b"labels" => {
                let Ok(WireKind::Struct(labels)) = value_kind(v) else {
                    return Err("field `labels`: expected an object of strings".into());
                };
                spec.labels.clear();
                for entry in struct_entries(labels) {
                    let (label, lv) = entry.map_err(|e| e.0)?;
                    let label = std::str::from_utf8(label)
                        .map_err(|_| "field `labels`: a label name is not UTF-8".to_string())?;
                    let lv = string_field(&format!("labels.{label}"), lv)?;
                    spec.labels.insert(label.to_string(), lv);
                }
            }
            // Unknown fields are ignored, as the JSON form does.
            _ => {}
        }
    }
    spec.address = address.ok_or("missing field `address`")?;
    Ok(spec)
}

fn string_field(name: &str, v: &[u8]) -> Result<String, String> {
    match value_kind(v) {
        Ok(WireKind::String(s)) => std::str::from_utf8(s)
            .map(str::to_string)
            .map_err(|_| format!("field `{name}`: not UTF-8")),
        _ => Err(format!("field `{name}`: expected a string")),
    }
}

fn weight_field(v: &[u8]) -> Result<u32, String> {
    match value_kind(v) {
        Ok(WireKind::Number(n)) if n.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&n) => {
            Ok(n as u32)
        }
        _ => Err("field `weight`: expected a whole number".into()),
    }
}

/// A protobuf wire-format error.
struct WireError(String);

enum Wire<'a> {
    Varint,
    Fixed64(u64),
    Fixed32,
    Bytes(&'a [u8]),
}

/// The fields of one protobuf message, in order.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Fields { rest: bytes }
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self
                .rest
                .split_first()
                .ok_or_else(|| WireError("truncated varint".into()))?;
            self.rest = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(WireError("varint too long".into()))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.rest.len() {
            return Err(WireError("truncated field".into()));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn field(&mut self) -> Result<(u64, Wire<'a>), WireError> {
        let key = self.varint()?;
        let number = key >> 3;
        if number == 0 {
            return Err(WireError("field number 0".into()));
        }
        let wire = match key & 7 {
            0 => {
                self.varint()?;
                Wire::Varint
            }
            1 => {
                let b = self.take(8)?;
                let arr: [u8; 8] = b
                    .try_into()
                    .map_err(|_| WireError("truncated fixed64".into()))?;
                Wire::Fixed64(u64::from_le_bytes(arr))
            }
            2 => {
                let n = usize::try_from(self.varint()?)
                    .map_err(|_| WireError("length too large".into()))?;
                Wire::Bytes(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed32
            }
            t => return Err(WireError(format!("wire type {t}"))),
        };
        Ok((number, wire))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Wire<'a>), WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = self.field();
        if item.is_err() {
            self.rest = &[];
        }
        Some(item)
    }
}

/// A map entry: key (1, UTF-8) and value (2), in any order.
fn map_entry(entry: &[u8]) -> Result<(&[u8], &[u8]), WireError> {
    let (mut key, mut value): (&[u8], &[u8]) = (&[], &[]);
    for field in Fields::new(entry) {
        match field? {
            (1, Wire::Bytes(k)) => key = k,
            (2, Wire::Bytes(v)) => value = v,
            (1 | 2, _) => return Err(WireError("map entry: wrong wire type".into())),
            _ => {}
        }
    }
    if std::str::from_utf8(key).is_err() {
        return Err(WireError("map key is not UTF-8".into()));
    }
    Ok((key, value))
}

/// The entries of a `google.protobuf.Struct` (field 1, map<string, Value>).
fn struct_entries(s: &[u8]) -> impl Iterator<Item = Result<(&[u8], &[u8]), WireError>> {
    Fields::new(s).filter_map(|f| match f {
        Ok((1, Wire::Bytes(entry))) => Some(map_entry(entry)),
        Ok((1, _)) => Some(Err(WireError("Struct.fields: wrong wire type".into()))),
        Ok(_) => None,
        Err(e) => Some(Err(e)),
    })
}

/// `google.protobuf.Value`'s kind (a oneof: the last one set wins; none is null).
enum WireKind<'a> {
    Null,
    Number(f64),
    String(&'a [u8]),
    Bool,
    Struct(&'a [u8]),
    List(&'a [u8]),
}

fn value_kind(v: &[u8]) -> Result<WireKind<'_>, WireError> {
    let mut kind = WireKind::Null;
    for field in Fields::new(v) {
        kind = match field? {
            (1, Wire::Varint) => WireKind::Null,
            (2, Wire::Fixed64(bits)) => WireKind::Number(f64::from_bits(bits)),
            (3, Wire::Bytes(s)) => WireKind::String(s),
            (4, Wire::Varint) => WireKind::Bool,
            (5, Wire::Bytes(s)) => WireKind::Struct(s),
            (6, Wire::Bytes(l)) => WireKind::List(l),
            (1..=6, _) => return Err(WireError("Value: wrong wire type".into())),
            _ => kind,
        };
    }
    Ok(kind)
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
        let frac = metadata_for(
            "ns",
            &serde_json::json!({"endpoints": [{"address": "10.0.0.1:1", "weight": 1.5}]}),
        );
        assert!(matches!(
            inventory_from_metadata(&frac, "ns"),
            Err(InventoryError::BadEntry { index: 0, .. })
        ));
    }
}
