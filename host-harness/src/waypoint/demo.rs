//! `make demo`, part 2: the guide's steps 3, 4 and 6
//! (`../shared/scenarios/seed-step*.json`) on the waypoint-shaped Envoy
//! made from istiod's golden xDS. The filter's configuration is the guide's
//! DestinationRule `trafficPolicy` (or the Service's traffic distribution)
//! and nothing about endpoints or localities: it reads the pods from
//! Envoy's admin and steers through `stateful_session`. One `PASS` or
//! `FAIL` line per step of the guide.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{plugin_config, DEFAULT_TIME_SCALE};
use crate::error::Result;
use crate::modes::{Mode, RunOptions};
use crate::runner::StepResult;
use crate::scenario::Scenario;

/// The guide's steps, in order.
pub const SEEDS: [&str; 5] = [
    "seed-step3-prefer-network",
    "seed-step4-prefer-close",
    "seed-step6-failover-priority",
    "seed-step6-outlier-ejection",
    "seed-step6-zone-region-order",
];

/// `../shared/scenarios` beside the workspace.
pub fn seed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("..")
        .join("shared")
        .join("scenarios")
}

fn where_it_went(r: &StepResult) -> String {
    let mut parts: Vec<String> = r
        .by_endpoint
        .iter()
        .map(|(name, n)| format!("{name} x{n}"))
        .collect();
    if r.client_errors > 0 {
        parts.push(format!("{} client error(s)", r.client_errors));
    }
    if parts.is_empty() {
        "no attempt".into()
    } else {
        parts.join(", ")
    }
}

/// What the filter is configured with, on one line (the policy only).
fn policy_summary(config: &Value) -> String {
    let mut shown = serde_json::Map::new();
    for key in ["trafficPolicy", "trafficDistribution"] {
        if let Some(v) = config.get(key) {
            shown.insert(key.into(), v.clone());
        }
    }
    if shown.is_empty() {
        "{} (nothing: Istio's defaults)".into()
    } else {
        Value::Object(shown).to_string()
    }
}

/// Plays one seed scenario; prints its steps; true when all passed.
fn play_seed(file: &Path, options: &RunOptions) -> Result<bool> {
    let scenario = Scenario::load(file)?;
    println!("\n{}", "=".repeat(100));
    println!("{}", scenario.name);
    println!(
        "filter configuration: {} + {}",
        policy_summary(&Value::Object(scenario.config.clone())),
        {
            let c = plugin_config(&Value::Object(serde_json::Map::new()));
            format!("inventory {} + steering {}", c["inventory"], c["steering"])
        }
    );
    println!("{}", "=".repeat(100));
    let (results, mismatches) = crate::modes::play(&scenario, options)?;
    if results.is_empty() && mismatches.is_empty() {
        println!("SKIP (see the reason above)");
        return Ok(false);
    }
    for (step, r) in scenario.steps.iter().zip(&results) {
        let failed = mismatches.iter().find(|m| m.step == step.name);
        match failed {
            None => println!("PASS  {}: {}", step.name, where_it_went(r)),
            Some(m) => println!("FAIL  {}: {} ({})", step.name, where_it_went(r), m.message),
        }
    }
    Ok(mismatches.is_empty())
}

/// Runs every seed; Ok(true) when every step passed.
pub fn run(wasm: Option<PathBuf>) -> Result<bool> {
    println!("locality-failover demo, part 2: the guide's steps 3, 4 and 6 on a waypoint-shaped Envoy 1.40");
    println!("made from the xDS istiod generates for the guide's waypoint (tests/golden/istiod,");
    println!(
        "envoy/waypoint/README.md). The filter gets only the guide's policy: it reads the pods and"
    );
    println!(
        "their priorities from Envoy's admin, infers its own locality from them, and steers each"
    );
    println!("request through Envoy's stateful_session filter. Durations x{DEFAULT_TIME_SCALE}.");
    let options = RunOptions {
        mode: Mode::Waypoint,
        time_scale: None,
        wasm,
        workers: None,
        declare: false,
    };
    let mut all = true;
    for seed in SEEDS {
        let file = seed_dir().join(format!("{seed}.json"));
        all &= play_seed(&file, &options)?;
    }
    println!(
        "\nwaypoint demo: {}",
        if all {
            "every step of the guide as expected"
        } else {
            "some step differed (FAIL above)"
        }
    );
    Ok(all)
}
