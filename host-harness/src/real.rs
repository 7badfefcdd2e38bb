//! `--mode envoy` and `--mode native`: scenarios played on a real Envoy.

use crate::modes::RunOptions;
use crate::runner::{Mismatch, StepResult};
use crate::scenario::Scenario;

pub fn play(_scenario: &Scenario, options: &RunOptions) -> Result<(Vec<StepResult>, Vec<Mismatch>), String> {
    Err(format!("mode {:?} is not wired yet", options.mode))
}
