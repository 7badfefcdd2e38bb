//! Host harness library: a simulated Envoy host that drives the filter's
//! own code ([`sim`]), the scenario format and runner ([`scenario`],
//! [`runner`], [`modes`]), and the real-Envoy building blocks ([`envoy`]).

pub mod demo;
pub mod envoy;
pub mod error;
pub mod fixtures;
pub mod modes;
pub mod real;
pub mod runner;
pub mod scenario;
pub mod sim;
pub mod sim_player;
pub mod waypoint;
