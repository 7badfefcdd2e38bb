//! `--mode envoy` and `--mode native`: scenarios played on a real Envoy
//! (`envoy` on `PATH` or `$ENVOY_BIN`).
//!
//! - `envoy` ([`filter_player`]): the compiled `.wasm` in Envoy, steering a
//!   CDS-file cluster whose metadata carries the inventory; one loopback
//!   upstream per endpoint.
//! - `native` ([`native_player`]): no filter; an EDS cluster with the
//!   priorities, outlier detection, panic threshold and locality weights
//!   Istio would program.
//!
//! Both run in real time with every duration of the scenario scaled by one
//! factor (default [`DEFAULT_TIME_SCALE`], `--time-scale`): the outlier
//! detection `interval` and `baseEjectionTime` of the configuration (their
//! Istio defaults when unset) and each step's `advance`. They say so on
//! standard error. Each step's requests go over one kept-alive client
//! connection, pinned to worker `step % workers` as the simulated host pins
//! them (see [`rig::Rig::begin_step`]). Attempts are counted from Envoy's
//! access log by request id; a client error is a 5xx answer.
//!
//! Envoy, the upstreams and the work directory go away when the player is
//! dropped (also on error); Envoy is started with a parent-death signal so
//! an aborted runner does not leave it behind.
//!
//! Debugging: `LF_DEBUG=1` traces each request (status, attempts with their
//! upstream status and flags), each step's Envoy worker and, in native mode,
//! the cluster's membership gauges; `LF_KEEP_ENVOY_DIR=1` keeps the work
//! directory (bootstrap, xDS files, `envoy.log`, `access.log`).

pub mod filter_player;
pub mod native_player;
pub mod player;
pub mod rig;

use std::time::Duration;

use locality_failover::config::duration::{format_duration, parse_duration};
use locality_failover::config::Settings;
use serde_json::Value;

use crate::error::{HarnessError, Result};
use crate::modes::{Mode, RunOptions};
use crate::runner::{self, Mismatch, StepResult};
use crate::scenario::Scenario;

/// Real-time modes play a scenario at this fraction of its durations
/// (10 s -> 200 ms, 3 m -> 3.6 s).
pub const DEFAULT_TIME_SCALE: f64 = 0.02;

/// Istio's defaults for the outlier detection durations it scales.
const DURATIONS: [(&str, Duration); 2] = [
    ("interval", Duration::from_secs(10)),
    ("baseEjectionTime", Duration::from_secs(30)),
];

/// Text of a scaled duration, as the plugin configuration takes it.
fn duration_text(d: Duration) -> String {
    if d.subsec_nanos() % 1_000_000 == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}ns", d.as_nanos())
    }
}

/// The scenario's plugin configuration with its outlier detection
/// durations scaled; and a description of what was scaled.
pub fn scaled_plugin_config(scenario: &Scenario, scale: f64) -> Result<(Value, Vec<String>)> {
    let mut config = scenario.plugin_config();
    let mut notes = Vec::new();
    if let Some(od) = config
        .pointer_mut("/trafficPolicy/outlierDetection")
        .and_then(Value::as_object_mut)
    {
        for (field, default) in DURATIONS {
            let original = match od.get(field) {
                Some(Value::String(s)) => {
                    parse_duration(s).map_err(|e| HarnessError::Unsupported {
                        field: format!("trafficPolicy.outlierDetection.{field}"),
                        value: format!("{s:?}"),
                        reason: e.to_string(),
                    })?
                }
                Some(other) => {
                    return Err(HarnessError::Unsupported {
                        field: format!("trafficPolicy.outlierDetection.{field}"),
                        value: other.to_string(),
                        reason: "not a duration".into(),
                    })
                }
                None => default,
            };
            let scaled = original.mul_f64(scale).max(Duration::from_millis(1));
            notes.push(format!(
                "outlierDetection.{field} {} -> {}",
                format_duration(original),
                duration_text(scaled)
            ));
            od.insert(field.to_string(), Value::String(duration_text(scaled)));
        }
    }
    Ok((config, notes))
}

pub fn play(scenario: &Scenario, options: &RunOptions) -> Result<(Vec<StepResult>, Vec<Mismatch>)> {
    let scale = options.time_scale.unwrap_or(DEFAULT_TIME_SCALE);
    let mode = match options.mode {
        Mode::Envoy => "envoy",
        Mode::Native => "native",
        Mode::Sim | Mode::Waypoint => return Err(sim_is_not_real()),
    };
    if crate::envoy::envoy_binary().is_none() {
        return Err(HarnessError::Missing {
            what: "envoy".into(),
            hint: "not on PATH (or $ENVOY_BIN): run scripts/setup.sh".into(),
        });
    }
    let (config, mut notes) = scaled_plugin_config(scenario, scale)?;
    let settings = Settings::from_bytes(config.to_string().as_bytes())?;
    notes.push(format!("each step's advance x{scale}"));
    if options.mode == Mode::Native {
        notes.push(format!(
            "Envoy's update_merge_window 1s -> {}",
            duration_text(native_player::ENVOY_UPDATE_MERGE_WINDOW.mul_f64(scale))
        ));
    }
    eprintln!(
        "{mode} mode, {}: every duration scaled by {scale} (--time-scale): {}",
        scenario.name,
        notes.join(", ")
    );
    match options.mode {
        Mode::Envoy => {
            let mut player =
                filter_player::FilterPlayer::start(scenario, options, config, &settings, scale)?;
            runner::play(scenario, &mut player)
        }
        Mode::Native => {
            let mut player = native_player::NativePlayer::start(scenario, &settings, scale)?;
            runner::play(scenario, &mut player)
        }
        Mode::Sim | Mode::Waypoint => Err(sim_is_not_real()),
    }
}

fn sim_is_not_real() -> HarnessError {
    HarnessError::Unsupported {
        field: "--mode".into(),
        value: "sim".into(),
        reason: "the sim mode does not run on a real Envoy".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_the_outlier_durations_and_their_defaults() {
        let text = r#"{"name":"x","endpoints":[{"name":"a","address":"10.0.0.1:80"}],
            "config":{"trafficPolicy":{"outlierDetection":{"consecutive5xxErrors":5,"baseEjectionTime":"3m"}}},
            "steps":[]}"#;
        let s = Scenario::parse("x.json", text).unwrap();
        let (c, notes) = scaled_plugin_config(&s, 0.02).unwrap();
        let od = &c["trafficPolicy"]["outlierDetection"];
        assert_eq!(od["interval"], "200ms");
        assert_eq!(od["baseEjectionTime"], "3600ms");
        assert_eq!(od["consecutive5xxErrors"], 5);
        assert_eq!(notes.len(), 2);
        let settings =
            locality_failover::config::Settings::from_bytes(c.to_string().as_bytes()).unwrap();
        let o = settings.policy.outlier.unwrap();
        assert_eq!(o.interval, Duration::from_millis(200));
        assert_eq!(o.base_ejection_time, Duration::from_millis(3600));
    }

    #[test]
    fn without_outlier_detection_nothing_is_scaled() {
        let text = r#"{"name":"x","endpoints":[{"name":"a","address":"10.0.0.1:80"}],"steps":[]}"#;
        let s = Scenario::parse("x.json", text).unwrap();
        let (c, notes) = scaled_plugin_config(&s, 0.5).unwrap();
        assert!(c.pointer("/trafficPolicy").is_none());
        assert!(notes.is_empty());
    }
}
