//! Istio-compatible zone and region failover for Envoy, as a proxy-wasm
//! HTTP filter.
//!
//! The failover engine ([`engine`], with [`inventory`], [`ranking`],
//! [`balancer`], [`outlier`]) is pure and deterministic; [`filter`] drives
//! it through the [`host::Host`] trait; the wasm glue (`wasm`, wasm32 only)
//! is the one place that talks to the proxy-wasm ABI.

pub mod admin;
pub mod balancer;
pub mod config;
pub mod detector;
pub mod engine;
pub mod feedback;
pub mod filter;
pub mod host;
pub mod inventory;
pub mod lint;
pub mod logline;
pub mod metadata;
pub mod metrics;
pub mod outlier;
pub mod poll;
pub mod properties;
pub mod ranking;
pub mod rng;
pub mod session;
pub mod shared;

#[cfg(all(target_arch = "wasm32", not(test)))]
mod wasm;
