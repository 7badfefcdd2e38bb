//! `config`: arbitrary bytes as the plugin configuration. Parsing,
//! validation and the lint must answer Ok or Err, never panic; what they
//! accept must satisfy the documented bounds; an accepted inline inventory
//! must load and serve.

use locality_failover::config::duration::{format_duration, parse_duration};
use locality_failover::config::{InventorySource, PluginConfig, Settings};
use locality_failover::engine::Engine;
use locality_failover::inventory::{Inventory, Labels};
use locality_failover::lint;

pub fn run(data: &[u8]) {
    if let Ok(settings) = Settings::from_bytes(data) {
        check_settings(&settings);
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let linted = lint::lint_json(&value);
        // The lint refuses exactly what validation refuses (same parse of the same value).
        if let Ok(raw) = serde_json::from_value::<PluginConfig>(value.clone()) {
            let validated = Settings::from_config(&raw);
            if validated.is_ok() != linted.is_ok() {
                panic!("lint_json {linted:?} disagrees with Settings::from_config {validated:?}");
            }
            if let Ok(s) = validated {
                check_settings(&s);
            }
        }
    }
    // Durations are the hand-written parser in the configuration.
    if data.len() <= 64 {
        if let Ok(text) = std::str::from_utf8(data) {
            if let Ok(d) = parse_duration(text) {
                let shown = format_duration(d);
                if !d.is_zero() && parse_duration(&shown).is_err() {
                    panic!("format_duration({d:?}) = {shown:?} does not parse back");
                }
            }
        }
    }
}

/// Bounds every accepted configuration satisfies.
pub fn check_settings(s: &Settings) {
    let _ = lint::warnings_for(s);
    if !(1..=16).contains(&s.steering.max_hosts) {
        panic!("accepted steering.maxHosts {}", s.steering.max_hosts);
    }
    if s.steering.header.is_empty() || s.steering.header.starts_with(':') {
        panic!("accepted steering header {:?}", s.steering.header);
    }
    if s.policy.panic_threshold > 100 {
        panic!("panic threshold {}", s.policy.panic_threshold);
    }
    if s.shared_prefix.is_empty() || s.shared_prefix.len() > 128 {
        panic!("shared prefix {:?}", s.shared_prefix);
    }
    if let Some(od) = &s.policy.outlier {
        if od.interval.is_zero() || od.base_ejection_time.is_zero() {
            panic!("zero outlier duration accepted: {od:?}");
        }
        if !(1..=100).contains(&od.max_ejection_percent) {
            panic!("maxEjectionPercent {} accepted", od.max_ejection_percent);
        }
        if od.max_ejection_time < od.base_ejection_time {
            panic!("max ejection time below base: {od:?}");
        }
    }
    if let InventorySource::Config(specs) = &s.inventory {
        let inv = match Inventory::from_specs(specs) {
            Ok(inv) => inv,
            Err(e) => panic!("Settings accepted an inline inventory that does not load: {e}"),
        };
        let _ = lint::ejection_cap(s, inv.len());
        let n = inv.len();
        let mut engine = Engine::new(s.policy.clone(), Labels::new(), inv, 1);
        for _ in 0..4 {
            if let Some(d) = engine.decide(s.steering.max_hosts) {
                if d.pick.endpoint >= n || d.hosts.iter().any(|h| *h >= n) {
                    panic!("decision {d:?} outside an inventory of {n}");
                }
            }
        }
    }
}
