//! `bench_engine`: the measurements behind `BENCHMARKS.md` (run them all
//! with `make bench`, which calls `scripts/bench.sh`).
//!
//! ```text
//! bench_engine engine           2. ns per Engine::decide, 10..10,000 endpoints
//! bench_engine failure          3. ejection and inventory/config change, 10,000 endpoints
//! bench_engine memory           4. native peak heap of one FilterRoot, 10,000 endpoints
//! bench_engine calls            5. host calls and buffers per request (simulated and counting hosts)
//! bench_engine envoy            1. Envoy CPU/request and latency: native, no-op wasm, this filter
//!                                  (3 processes per configuration x 2 interleaved rounds)
//! bench_engine envoy-memory     4. wasm linear memory and RSS in a real Envoy, 10 vs 10,000 endpoints
//! bench_engine serve N          the upstream: N loopback HTTP/1.1 listeners (a separate process)
//! ```
//!
//! Every result is printed on stdout as one tab-separated line
//! `ROW <bench> <what> <measured> <target> <verdict>`; progress goes to
//! stderr. `scripts/bench.sh` turns the rows into the table.
//!
//! The binary installs a counting global allocator. Counting is off unless
//! a benchmark turns it on, so timings are not taxed by it; while the
//! simulated host works on its own data (shared data, properties) the
//! allocations are not charged to the filter (see `alloc::host_side`).

mod alloc;
mod buffers;
mod calls;
mod envoy;
mod envoy_config;
mod envoy_memory;
mod failure;
mod fixtures;
mod host;
mod measure;
mod memory;
mod pick;
mod probe;
mod report;
mod rounds;
mod upstream;

use std::path::PathBuf;
use std::process::ExitCode;

use crate::calls::bench_calls;
use crate::envoy::{bench_envoy, EnvoyBench};
use crate::envoy_memory::bench_envoy_memory;
use crate::failure::bench_failure;
use crate::memory::bench_memory;
use crate::pick::bench_engine;
use crate::probe::bench_envoy_probe;
use crate::report::row;
use crate::rounds::envoy_phases;
use crate::upstream::serve;

/// Why a benchmark could not run (not a missed target: those are rows).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BenchError(String);

impl From<String> for BenchError {
    fn from(message: String) -> Self {
        BenchError(message)
    }
}

impl From<&str> for BenchError {
    fn from(message: &str) -> Self {
        BenchError(message.to_string())
    }
}

fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn arg_parse<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    arg_value(args, name)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn arg_path(args: &[String], name: &str, default: &str) -> PathBuf {
    PathBuf::from(arg_value(args, name).unwrap_or_else(|| default.into()))
}

/// A benchmark that failed to run: one MISS row (`bench`, `what`) and exit 1.
fn failed(bench: &str, what: &str, e: &str) -> ExitCode {
    eprintln!("bench: {what}: {e}");
    row(
        bench,
        what,
        &format!("failed: {}", e.lines().next().unwrap_or("")),
        "",
        "MISS",
    );
    ExitCode::from(1)
}

/// `bench_engine envoy`: (a), (b), (c), compared builds and the floor.
fn run_envoy(args: &[String]) -> ExitCode {
    let wasm = arg_path(args, "--wasm", "build/locality_failover.wasm");
    let noop = arg_path(args, "--noop-wasm", "build/noop_filter.wasm");
    let compare: Vec<PathBuf> = arg_value(args, "--compare")
        .map(|c| {
            c.split(',')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    let floor = arg_value(args, "--floor").map(PathBuf::from);
    let bench = EnvoyBench {
        filter_wasm: &wasm,
        noop_wasm: &noop,
        compare: &compare,
        floor: floor.as_deref(),
        floor_extra: args.iter().any(|a| a == "--floor-extra"),
    };
    let only: Option<u32> = arg_value(args, "--concurrency").and_then(|c| c.parse().ok());
    let phases: Vec<_> = envoy_phases(
        arg_parse(args, "--seconds", 4),
        arg_parse(args, "--repeats", 2),
        arg_parse(args, "--processes", 3),
    )
    .into_iter()
    .filter(|p| only.is_none_or(|c| c == p.concurrency))
    .collect();
    match bench_envoy(&bench, &phases) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failed("1", "Envoy benchmark", &e.to_string()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let wasm = arg_path(&args, "--wasm", "build/locality_failover.wasm");
    match args.first().map(String::as_str) {
        Some("engine") => bench_engine(),
        Some("failure") => bench_failure(),
        Some("memory") => bench_memory(&wasm),
        Some("calls") => bench_calls(),
        Some("envoy") => return run_envoy(&args),
        Some("envoy-probe") => {
            let probe = arg_path(&args, "--probe-wasm", "build/probe_filter.wasm");
            let (seconds, repeats) = (
                arg_parse(&args, "--seconds", 4),
                arg_parse(&args, "--repeats", 3),
            );
            if let Err(e) =
                bench_envoy_probe(&probe, seconds, repeats, arg_parse(&args, "--calls", 20))
            {
                eprintln!("bench: envoy-probe: {e}");
                return ExitCode::from(1);
            }
        }
        Some("envoy-memory") => {
            if let Err(e) = bench_envoy_memory(&wasm) {
                return failed("4", "Envoy memory benchmark", &e.to_string());
            }
        }
        Some("serve") => return serve(args.get(1).and_then(|n| n.parse().ok()).unwrap_or(1)),
        _ => {
            eprintln!("usage: bench_engine engine|failure|memory|calls|envoy|envoy-probe|envoy-memory|serve N [--wasm F] [--noop-wasm F] [--seconds S] [--repeats R] [--processes P] [--compare F,..] [--floor F] [--floor-extra] [--concurrency C]");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
