//! The step logic of both real-Envoy players, written once: a player
//! implements [`RealEnvoy`] (how it publishes endpoints and reads
//! ejections) and gets [`Player`] from it.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::error::Result;
use crate::runner::{Player, Traffic};
use crate::scenario::{EndpointState, Scenario};

use super::rig::Rig;

/// What differs between the real-Envoy players.
pub trait RealEnvoy {
    /// The scenario, the endpoints now in the inventory, and the rig.
    fn parts(&mut self) -> (&Scenario, &mut BTreeSet<String>, &mut Rig);
    /// Tells Envoy about the present endpoints (a CDS or EDS file update).
    fn publish(&mut self) -> Result<()>;
    /// Reads what Envoy reported since the last call (the filter's log);
    /// called when a step starts, after its traffic and before ejections.
    fn observe(&mut self) {}
    /// Names of the endpoints ejected now, as last observed.
    fn ejected_now(&mut self) -> Vec<String>;
}

impl<T: RealEnvoy> Player for T {
    fn begin_step(&mut self, index: usize) -> Result<()> {
        self.parts().2.begin_step(index)?;
        self.observe();
        Ok(())
    }

    fn apply(&mut self, set: &[(String, EndpointState)]) -> Result<()> {
        let (scenario, present, rig) = self.parts();
        let changed =
            scenario.apply_set(present, set, |e, state| rig.set_upstream(&e.name, state))?;
        if changed {
            self.publish()?;
        }
        Ok(())
    }

    fn advance(&mut self, by: Duration) {
        self.parts().2.advance(by);
    }

    /// Sends the requests, then reads all their attempts from the access
    /// log at once (see [`Rig::send`] for why not one by one).
    fn requests(&mut self, n: u32) -> Result<Traffic> {
        let rig = self.parts().2;
        let mut traffic = Traffic::default();
        if n == 0 {
            return Ok(traffic);
        }
        for _ in 0..n {
            traffic.client_errors += u64::from(rig.send()?);
        }
        let outcomes = rig.collect()?;
        traffic.attempts = outcomes.into_iter().flat_map(|o| o.attempts).collect();
        self.observe();
        Ok(traffic)
    }

    fn ejected(&mut self) -> Vec<String> {
        self.observe();
        self.ejected_now()
    }
}
