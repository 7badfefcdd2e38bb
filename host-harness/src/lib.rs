//! Host harness library: simulated Envoy host and real-Envoy building blocks.

pub mod envoy;
