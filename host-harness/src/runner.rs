//! Plays a scenario step by step against a [`Player`] (the simulated host,
//! a real Envoy with the filter, or Envoy's own load balancer) and checks
//! the expectations. Output: one JSON line per step.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::error::Result;
use crate::scenario::{EndpointState, Scenario, Step};

/// One mode of playing scenarios.
pub trait Player {
    /// A step starts: its requests share one client connection, which Envoy
    /// pins to one worker (the next step may land on another).
    fn begin_step(&mut self, index: usize) -> Result<()>;
    /// Applies a step's `set` (endpoint behaviour and inventory changes).
    fn apply(&mut self, set: &[(String, EndpointState)]) -> Result<()>;
    /// Lets `by` pass (scaled by the mode if it runs in real time).
    fn advance(&mut self, by: Duration);
    /// Sends the step's `n` requests, each outcome fed back before the
    /// next; returns what they did.
    fn requests(&mut self, n: u32) -> Result<Traffic>;
    /// Names of the endpoints ejected now.
    fn ejected(&mut self) -> Vec<String>;
}

/// What a step's requests did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Traffic {
    /// The endpoint name of every attempt, in order.
    pub attempts: Vec<String>,
    /// Requests the client got a 5xx for.
    pub client_errors: u64,
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepResult {
    pub scenario: String,
    pub step: String,
    pub requests: u32,
    pub by_endpoint: BTreeMap<String, u64>,
    pub client_errors: u64,
    pub ejected: Vec<String>,
}

/// A step whose expectation did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub step: String,
    pub message: String,
}

/// Plays every step; returns the results and the mismatches.
pub fn play(
    scenario: &Scenario,
    player: &mut dyn Player,
) -> Result<(Vec<StepResult>, Vec<Mismatch>)> {
    let mut results = Vec::new();
    let mut mismatches = Vec::new();
    for (index, step) in scenario.steps.iter().enumerate() {
        player.begin_step(index)?;
        let result = play_step(scenario, step, player)?;
        if let Some(m) = check(scenario, step, &result) {
            mismatches.push(m);
        }
        results.push(result);
    }
    Ok((results, mismatches))
}

fn play_step(scenario: &Scenario, step: &Step, player: &mut dyn Player) -> Result<StepResult> {
    if !step.set.is_empty() {
        player.apply(&step.set)?;
    }
    if !step.advance.is_zero() {
        player.advance(step.advance);
    }
    let traffic = player.requests(step.requests)?;
    let mut by_endpoint: BTreeMap<String, u64> = BTreeMap::new();
    for name in traffic.attempts {
        *by_endpoint.entry(name).or_default() += 1;
    }
    Ok(StepResult {
        scenario: scenario.name.clone(),
        step: step.name.clone(),
        requests: step.requests,
        by_endpoint,
        client_errors: traffic.client_errors,
        ejected: player.ejected(),
    })
}

/// Compares a step's result with its `expect`: every endpoint within
/// `tolerance` of its count (unnamed endpoints expect 0), client errors exact.
pub fn check(scenario: &Scenario, step: &Step, result: &StepResult) -> Option<Mismatch> {
    let expect = step.expect.as_ref()?;
    let mut problems = Vec::new();
    for e in &scenario.endpoints {
        let want = expect.by_endpoint.get(&e.name).copied().unwrap_or(0);
        let got = result.by_endpoint.get(&e.name).copied().unwrap_or(0);
        if want.abs_diff(got) > expect.tolerance {
            problems.push(format!("{}: expected {want}, got {got}", e.name));
        }
    }
    for (name, got) in &result.by_endpoint {
        if scenario.endpoint(name).is_none() {
            problems.push(format!("{name}: not a scenario endpoint, got {got}"));
        }
    }
    if let Some(want) = expect.client_errors {
        if want != result.client_errors {
            problems.push(format!(
                "client_errors: expected {want}, got {}",
                result.client_errors
            ));
        }
    }
    (!problems.is_empty()).then(|| Mismatch {
        step: step.name.clone(),
        message: problems.join("; "),
    })
}
