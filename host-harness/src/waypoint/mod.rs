//! `--mode waypoint`: scenarios on an Envoy 1.40 made from the xDS that
//! istiod generates for the guide's waypoint (`tests/golden/istiod/`), the
//! filter configured as a user would on a real waypoint: the scenario's
//! `trafficPolicy` / `trafficDistribution`, `inventory: envoy` (the pods
//! from Envoy's admin through `prometheus_stats`) and `steering:
//! stateful-session` (Envoy's `stateful_session` filter, inserted before
//! the router by our EnvoyFilter, takes the pick). No endpoint and no
//! locality in the configuration.
//!
//! - [`golden`]: the golden files; [`render`]: the bootstrap made from them,
//!   every substitution named (`envoy/waypoint/README.md`);
//! - [`eds`]: the pods as istiod's EDS (internal addresses, priorities),
//!   updated live through a watched file;
//! - [`applicability`]: which scenarios cannot apply on a waypoint, and why
//!   (printed as `SKIP`, never silent);
//! - [`player`]: plays the steps (the runner machinery of `crate::real`).

pub mod applicability;
pub mod demo;
pub mod eds;
pub mod golden;
pub mod player;
pub mod render;

use std::time::Duration;

use serde_json::{json, Value};

use crate::error::{HarnessError, Result};
use crate::modes::RunOptions;
use crate::real::{filter_player::wasm_path, scaled_plugin_config};
use crate::runner::{self, Mismatch, StepResult};
use crate::scenario::Scenario;

/// Waypoint runs scale durations less than the other real-time modes: two
/// outlier detectors (Envoy's on the cluster, the filter's) sweep on their
/// own timers. Their phases now agree with the scenario's (a dynamic
/// cluster and a clock started on Envoy's sweeps: `xds-from-files` in
/// envoy/waypoint/README.md); 0.05 is kept for margin, not re-measured at
/// the other modes' 0.02.
pub const DEFAULT_TIME_SCALE: f64 = 0.05;
/// The filter's admin poll period. Not a scenario duration: the runner
/// waits for the filter to see each EDS change before the step goes on.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The header the golden EnvoyFilter's `stateful_session` reads.
pub const SESSION_HEADER: &str = "x-locality-failover-session";

/// The filter's configuration: the scenario's (durations scaled) without
/// any inventory, steering or locality, plus the waypoint's inventory and
/// steering.
pub fn plugin_config(scaled: &Value) -> Value {
    let mut cfg = match scaled {
        Value::Object(m) => m.clone(),
        _ => serde_json::Map::new(),
    };
    for key in ["inventory", "steering", "locality"] {
        cfg.remove(key);
    }
    cfg.insert(
        "inventory".into(),
        json!({ "source": "envoy", "adminCluster": render::ADMIN_CLUSTER,
                "pollInterval": format!("{}ms", POLL_INTERVAL.as_millis()) }),
    );
    cfg.insert(
        "steering".into(),
        json!({ "mode": "stateful-session", "header": SESSION_HEADER }),
    );
    Value::Object(cfg)
}

pub fn play(scenario: &Scenario, options: &RunOptions) -> Result<(Vec<StepResult>, Vec<Mismatch>)> {
    let shape = match applicability::decide(scenario)? {
        applicability::Applicability::Plays(shape) => shape,
        applicability::Applicability::Skip(reason) => {
            eprintln!("waypoint mode, {}: SKIP: {reason}", scenario.name);
            return Ok((Vec::new(), Vec::new()));
        }
    };
    if crate::envoy::envoy_binary().is_none() {
        return Err(HarnessError::Missing {
            what: "envoy".into(),
            hint: "not on PATH (or $ENVOY_BIN): run scripts/setup.sh".into(),
        });
    }
    let scale = options.time_scale.unwrap_or(DEFAULT_TIME_SCALE);
    let (scaled, mut notes) = scaled_plugin_config(scenario, scale)?;
    notes.push(format!("each step's advance x{scale}"));
    let config = plugin_config(&scaled);
    // Pods behind east-west gateways: istiod's output with ambient
    // multi-network on (the authority matcher first in main_internal).
    let case = match shape {
        applicability::Shape::Gateway if !applicability::remote_in(scenario, shape).is_empty() => {
            "multi-network"
        }
        _ => golden::case_for(&config),
    };
    let golden = golden::Golden::load(case).map_err(|shape| HarnessError::File {
        file: format!("tests/golden/istiod/{case}"),
        message: shape.to_string(),
    })?;
    eprintln!(
        "waypoint mode, {}: golden case {case} (istiod {}), pods of other networks {}; every duration scaled by {scale} (--time-scale): {}",
        scenario.name,
        golden.istio_version(),
        match shape {
            applicability::Shape::Gateway => "behind east-west gateways",
            applicability::Shape::Flat => "as plain endpoints",
        },
        notes.join(", ")
    );
    let wasm = wasm_path(options)?;
    let mut player = player::WaypointPlayer::start(
        scenario,
        player::Start {
            golden: &golden,
            plugin_config: config,
            scaled_config: &scaled,
            wasm: &wasm,
            scale,
            shape,
            inventory_lag: POLL_INTERVAL * 3 + Duration::from_millis(100),
        },
    )?;
    runner::play(scenario, &mut player)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_gets_the_policy_and_nothing_about_endpoints() {
        let scaled = json!({
            "trafficPolicy": {"outlierDetection": {"interval": "500ms"}},
            "inventory": {"source": "config", "endpoints": []},
            "locality": {"zone": "z"},
            "steering": {"mode": "override-host"}
        });
        let c = plugin_config(&scaled);
        assert_eq!(c["trafficPolicy"], scaled["trafficPolicy"]);
        assert_eq!(c["inventory"]["source"], "envoy");
        assert!(c["inventory"].get("endpoints").is_none());
        assert!(c.get("locality").is_none());
        assert_eq!(c["steering"]["mode"], "stateful-session");
        assert_eq!(c["steering"]["header"], SESSION_HEADER);
    }
}
