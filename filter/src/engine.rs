//! The failover engine for one upstream cluster: inventory, ranking,
//! health view and balancer together. Pure and deterministic: no host
//! calls, randomness from a seeded [`Rng`], ejections handed in as an
//! [`EjectionTable`].
//!
//! Work that depends on the inventory, the configuration or the ejection
//! set happens when they change ([`Engine::set_inventory`],
//! [`Engine::apply_table`]); [`Engine::decide`] is the request path.

use std::collections::HashMap;

use crate::balancer::{Balancer, LoadView, Pick};
use crate::config::Policy;
use crate::inventory::{Endpoint, Inventory, Labels};
use crate::outlier::EjectionTable;
use crate::ranking::{rank, Ranking};
use crate::rng::Rng;

/// The filter's choice for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub pick: Pick,
    /// Inventory indexes: the pick first, then where retries should go.
    pub hosts: Vec<usize>,
}

#[derive(Debug)]
pub struct Engine {
    policy: Policy,
    client: Labels,
    inventory: Inventory,
    by_address: HashMap<String, usize>,
    ranking: Ranking,
    balancer: Balancer,
    unhealthy: Vec<bool>,
    table_generation: Option<u64>,
    active: Vec<u32>,
    rng: Rng,
}

impl Engine {
    pub fn new(policy: Policy, client: Labels, inventory: Inventory, seed: u64) -> Engine {
        let balancer = Balancer::new(policy.lb, policy.panic_threshold);
        let mut engine = Engine {
            policy,
            client,
            inventory: Inventory::default(),
            by_address: HashMap::new(),
            ranking: Ranking::default(),
            balancer,
            unhealthy: vec![],
            table_generation: None,
            active: vec![],
            rng: Rng::new(seed),
        };
        engine.set_inventory(inventory, None);
        engine
    }

    /// Replaces the inventory: re-ranks, and keeps the ejections of
    /// endpoints that are still there (by address).
    pub fn set_inventory(&mut self, inventory: Inventory, table: Option<&EjectionTable>) {
        self.by_address = inventory
            .endpoints()
            .iter()
            .enumerate()
            .map(|(i, e)| (e.address.clone(), i))
            .collect();
        self.ranking = rank(&self.policy.ranking, &self.client, &inventory);
        let old_active: HashMap<&str, u32> = self
            .inventory
            .endpoints()
            .iter()
            .zip(&self.active)
            .map(|(e, a)| (e.address.as_str(), *a))
            .collect();
        let active = inventory
            .endpoints()
            .iter()
            .map(|e| old_active.get(e.address.as_str()).copied().unwrap_or(0))
            .collect();
        self.active = active;
        self.inventory = inventory;
        self.unhealthy = self
            .inventory
            .endpoints()
            .iter()
            .map(|e| !e.healthy)
            .collect();
        if let Some(t) = table {
            self.mark(t);
        } else {
            self.table_generation = None;
        }
        self.balancer
            .rebuild(&self.ranking, &self.unhealthy, &mut self.rng);
    }

    /// Takes a new ejection view. Cheap when the generation did not change.
    pub fn apply_table(&mut self, table: &EjectionTable) -> bool {
        if self.table_generation == Some(table.generation) {
            return false;
        }
        let before = self.unhealthy.clone();
        self.mark(table);
        if self.unhealthy == before {
            // Same hosts ejected (e.g. only a backoff decayed): Envoy's host
            // sets did not change, so neither do its schedulers and cursors.
            return false;
        }
        self.balancer
            .rebuild(&self.ranking, &self.unhealthy, &mut self.rng);
        true
    }

    fn mark(&mut self, table: &EjectionTable) {
        // Hosts Envoy holds unavailable stay unhealthy whatever the table says.
        for (u, e) in self.unhealthy.iter_mut().zip(self.inventory.endpoints()) {
            *u = !e.healthy;
        }
        for (address, record) in &table.hosts {
            if record.ejected {
                if let Some(u) = self
                    .by_address
                    .get(address)
                    .and_then(|i| self.unhealthy.get_mut(*i))
                {
                    *u = true;
                }
            }
        }
        self.table_generation = Some(table.generation);
    }

    pub fn table_generation(&self) -> Option<u64> {
        self.table_generation
    }

    /// Picks the endpoint for one request and the ones retries should take.
    /// `None`: nothing can be picked (Envoy's "no healthy upstream").
    pub fn decide(&mut self, max_hosts: usize) -> Option<Decision> {
        let mut hosts = Vec::with_capacity(max_hosts.max(1));
        let pick = self.decide_into(max_hosts, &mut hosts)?;
        Some(Decision { pick, hosts })
    }

    /// [`Engine::decide`] into a caller-owned buffer (the request path
    /// reuses one, so a pick allocates nothing). `hosts` is overwritten.
    pub fn decide_into(&mut self, max_hosts: usize, hosts: &mut Vec<usize>) -> Option<Pick> {
        let pick = self.balancer.pick(&mut self.rng, &self.active)?;
        self.balancer.fallbacks(pick, max_hosts.max(1), hosts);
        Some(pick)
    }

    /// Least-request bookkeeping: a request to `endpoint` started / ended.
    pub fn begin(&mut self, endpoint: usize) {
        if let Some(a) = self.active.get_mut(endpoint) {
            *a = a.saturating_add(1);
        }
    }

    pub fn end(&mut self, address: &str) {
        if let Some(a) = self
            .by_address
            .get(address)
            .and_then(|i| self.active.get_mut(*i))
        {
            *a = a.saturating_sub(1);
        }
    }

    pub fn endpoint(&self, index: usize) -> Option<&Endpoint> {
        self.inventory.get(index)
    }

    pub fn index_of(&self, address: &str) -> Option<usize> {
        self.by_address.get(address).copied()
    }

    pub fn contains(&self, address: &str) -> bool {
        self.by_address.contains_key(address)
    }

    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    pub fn ranking(&self) -> &Ranking {
        &self.ranking
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn is_unhealthy(&self, index: usize) -> bool {
        self.unhealthy.get(index).copied().unwrap_or(false)
    }

    pub fn load_view(&self) -> LoadView {
        self.balancer.view()
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
