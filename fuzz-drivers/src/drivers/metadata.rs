//! `metadata`: the inventory as Envoy hands it over, binary
//! `envoy.config.core.v3.Metadata`.
//!
//! 1. The input bytes as metadata: decode must answer Ok or Err; an
//!    accepted inventory survives a round trip through `to_specs` and
//!    `metadata_for`.
//! 2. The same bytes as choices for a structured `Metadata` (namespaces of
//!    `google.protobuf.Struct` values, inventory-shaped or arbitrary, from a
//!    depth-limited recursive generator), encoded and decoded back: the
//!    protobuf round trip is exact, an inventory read from the bytes is
//!    the one read from the JSON form of the struct (`from_json`), and the
//!    JSON view round-trips through `metadata_for`.

use std::collections::HashMap;

use locality_failover::inventory::{Inventory, InventoryError};
use locality_failover::metadata::{
    inventory_from_metadata, metadata_for, struct_to_json, Metadata,
};
use prost::Message;
use prost_types::value::Kind;

use crate::gen;
use crate::input::Input;

pub const NAMESPACE: &str = "locality-failover";

pub fn run(data: &[u8]) {
    raw(data);
    structured(data);
}

fn raw(data: &[u8]) {
    if let Ok(inv) = inventory_from_metadata(data, NAMESPACE) {
        round_trip(&inv);
    }
}

/// An accepted inventory reads back the same from its written form.
fn round_trip(inv: &Inventory) {
    let specs = inv.to_specs();
    match Inventory::from_specs(&specs) {
        Ok(back) if &back == inv => {}
        other => panic!("to_specs/from_specs round trip: {inv:?} became {other:?}"),
    }
    let json = serde_json::json!({ "endpoints": specs });
    let bytes = metadata_for(NAMESPACE, &json);
    match inventory_from_metadata(&bytes, NAMESPACE) {
        Ok(back) if &back == inv => {}
        other => panic!("metadata_for round trip: {inv:?} became {other:?}"),
    }
}

const NAMESPACES: &[&str] = &[NAMESPACE, NAMESPACE, "other", ""];

fn structured(data: &[u8]) {
    let mut inp = Input::new(data);
    let mut filter_metadata = HashMap::new();
    for _ in 0..inp.below(3) + 1 {
        let ns = inp.pick(NAMESPACES).to_string();
        let s = if inp.ratio(3, 4) {
            gen::pb_inventory(&mut inp)
        } else {
            gen::pb_struct(&mut inp, 4)
        };
        filter_metadata.insert(ns, s);
    }
    let metadata = Metadata { filter_metadata };
    let bytes = metadata.encode_to_vec();
    let decoded = match Metadata::decode(bytes.as_slice()) {
        Ok(m) => m,
        Err(e) => panic!("own encoding does not decode: {e}"),
    };
    if !same_metadata(&metadata, &decoded) {
        panic!("protobuf round trip changed the metadata: {metadata:?} -> {decoded:?}");
    }
    // The filter reads the Struct directly; the inline configuration reads
    // the same schema as JSON. Whatever the Struct path accepts, the JSON
    // path accepts identically. (The JSON path is the more lenient one: it
    // takes a null, NaN or infinite optional field as absent, where the
    // Struct path refuses the entry; that is allowed here.)
    let via_bytes = inventory_from_metadata(&bytes, NAMESPACE);
    let via_json = match metadata.filter_metadata.get(NAMESPACE) {
        None => Err(InventoryError::MissingNamespace(NAMESPACE.to_string())),
        Some(s) => Inventory::from_json(&struct_to_json(s)),
    };
    match (&via_bytes, &via_json) {
        (Ok(a), Ok(b)) if a != b => {
            panic!("inventory from the metadata bytes {a:?} != from its JSON form {b:?}")
        }
        (Ok(a), Err(e)) => {
            panic!("metadata inventory {a:?} accepted, but its JSON form is refused: {e}")
        }
        _ => {}
    }
    if let Some(s) = metadata.filter_metadata.get(NAMESPACE) {
        let json = struct_to_json(s);
        let again = metadata_for(NAMESPACE, &json);
        let back = match Metadata::decode(again.as_slice()) {
            Ok(m) => m,
            Err(e) => panic!("metadata_for output does not decode: {e}"),
        };
        let json_back = back.filter_metadata.get(NAMESPACE).map(struct_to_json);
        if json_back.as_ref() != Some(&json) {
            panic!("JSON view changed through metadata_for: {json} -> {json_back:?}");
        }
    }
    if let Ok(inv) = via_bytes {
        round_trip(&inv);
    }
}

fn same_metadata(a: &Metadata, b: &Metadata) -> bool {
    a.filter_metadata.len() == b.filter_metadata.len()
        && a.filter_metadata
            .iter()
            .all(|(k, s)| b.filter_metadata.get(k).is_some_and(|t| same_struct(s, t)))
}

fn same_struct(a: &prost_types::Struct, b: &prost_types::Struct) -> bool {
    a.fields.len() == b.fields.len()
        && a.fields
            .iter()
            .zip(&b.fields)
            .all(|((ka, va), (kb, vb))| ka == kb && same_value(va, vb))
}

/// Structural equality with numbers compared bit for bit (NaN included).
fn same_value(a: &prost_types::Value, b: &prost_types::Value) -> bool {
    match (&a.kind, &b.kind) {
        (None, None) => true,
        (Some(Kind::NumberValue(x)), Some(Kind::NumberValue(y))) => x.to_bits() == y.to_bits(),
        (Some(Kind::StructValue(x)), Some(Kind::StructValue(y))) => same_struct(x, y),
        (Some(Kind::ListValue(x)), Some(Kind::ListValue(y))) => {
            x.values.len() == y.values.len()
                && x.values
                    .iter()
                    .zip(&y.values)
                    .all(|(p, q)| same_value(p, q))
        }
        (x, y) => x == y,
    }
}
