//! Several Envoy processes per configuration, measured in interleaved
//! rounds. One process of a configuration can sit ~±2.5 µs/request off the
//! others for its whole life (code layout, ../shared/spec/perf-profile.md):
//! interleaving removes drift, only more processes average that out. So a
//! configuration is measured on `processes` processes, one generation at a
//! time (one process per configuration, all warmed up, then `repeats`
//! rounds a, b, c, a, b, c, ...). On this shared VM interference only ever
//! adds CPU per request: a configuration's samples have a sharp lower edge
//! and a long upper tail (BENCHMARKS.md). So a configuration is reported by
//! its undisturbed cost ([`Results::undisturbed`]: each process's least
//! disturbed round, median over processes), which the verdicts use, and by
//! the median over every sample with the min-max spread. The all-rounds
//! view of a ratio is the median of its per-round ratios: the two samples
//! of a round ran seconds apart, so slow drift of the machine cancels in
//! each, which the ratio of two medians over minutes does not.

use crate::BenchError;
use std::collections::BTreeMap;

use crate::measure::{measure, pin, run_wrk, Measurement};
use crate::report::{median, progress};
use host_harness::envoy::{EnvoyOptions, EnvoyProcess, Generated, Layout};

pub(crate) struct EnvoyParams {
    pub(crate) concurrency: u32,
    pub(crate) connections: u32,
    pub(crate) wrk_threads: u32,
    pub(crate) seconds: u32,
    pub(crate) warmup: u32,
    /// Rounds per process.
    pub(crate) repeats: usize,
    /// Envoy processes per configuration (one after the other).
    pub(crate) processes: usize,
    /// CPUs for Envoy; None: not pinned.
    pub(crate) envoy_cpus: Option<String>,
    /// CPUs for wrk and the upstream; None: not pinned.
    pub(crate) client_cpus: Option<String>,
}

/// A configuration to measure: its name, Envoy config and directory.
pub(crate) type Config = (String, Generated, Layout);

/// A check run on each process after its rounds (e.g. the filter's stats).
pub(crate) type Check<'a> = &'a dyn Fn(&str, &EnvoyProcess) -> Result<(), BenchError>;

/// Samples per configuration, each tagged with its process generation and
/// round.
#[derive(Default)]
pub(crate) struct Results {
    by_name: BTreeMap<String, Vec<(usize, Measurement)>>,
    /// Per configuration: (generation, round) -> sample index in `by_name`.
    rounds: BTreeMap<String, BTreeMap<(usize, usize), usize>>,
}

impl Results {
    /// `num / den` of each round both were measured in.
    pub(crate) fn round_ratios(
        &self,
        num: &str,
        den: &str,
        f: fn(&Measurement) -> f64,
    ) -> Vec<f64> {
        let (Some(n), Some(d)) = (self.rounds.get(num), self.rounds.get(den)) else {
            return Vec::new();
        };
        let sample = |name: &str, i: usize| {
            self.by_name
                .get(name)
                .and_then(|v| v.get(i))
                .map(|(_, m)| f(m))
        };
        n.iter()
            .filter_map(|(key, i)| Some(sample(num, *i)? / sample(den, *d.get(key)?)?))
            .collect()
    }

    /// Every sample of `name`, as `f` reads it.
    pub(crate) fn values(&self, name: &str, f: fn(&Measurement) -> f64) -> Vec<f64> {
        self.by_name
            .get(name)
            .map(|ms| ms.iter().map(|(_, m)| f(m)).collect())
            .unwrap_or_default()
    }

    /// The median over every sample of `name`.
    pub(crate) fn median(&self, name: &str, f: fn(&Measurement) -> f64) -> f64 {
        median(&mut self.values(name, f))
    }

    /// (min, max) over every sample of `name`.
    pub(crate) fn range(&self, name: &str, f: fn(&Measurement) -> f64) -> (f64, f64) {
        let v = self.values(name, f);
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (min, max)
    }

    /// `stat` of each process generation's samples of `name`.
    fn per_process(
        &self,
        name: &str,
        f: fn(&Measurement) -> f64,
        stat: fn(&mut [f64]) -> f64,
    ) -> BTreeMap<usize, f64> {
        let mut by: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
        for (process, m) in self.by_name.get(name).into_iter().flatten() {
            by.entry(*process).or_default().push(f(m));
        }
        by.into_iter().map(|(p, mut v)| (p, stat(&mut v))).collect()
    }

    /// The undisturbed cost of `name`: each process's least disturbed round
    /// (its minimum), then the median over the processes. Interference from
    /// the rest of the machine only ever adds CPU per request, so a
    /// process's lowest sample is its best estimate of the undisturbed cost
    /// (the minimum estimator of Chen & Revels, "Robust benchmarking in
    /// noisy environments", 2016, used by Julia's BenchmarkTools); the
    /// median over processes keeps one process's code layout from deciding.
    pub(crate) fn undisturbed(&self, name: &str, f: fn(&Measurement) -> f64) -> f64 {
        let mut v: Vec<f64> = self.per_process(name, f, lowest).into_values().collect();
        median(&mut v)
    }

    /// `num / den` per process generation (processes measured side by
    /// side), each process taken as `stat` of its samples ([`median`], or
    /// [`lowest`] for the undisturbed cost): (min, max).
    pub(crate) fn process_pair_range(
        &self,
        num: &str,
        den: &str,
        f: fn(&Measurement) -> f64,
        stat: fn(&mut [f64]) -> f64,
    ) -> (f64, f64) {
        let d = self.per_process(den, f, stat);
        self.per_process(num, f, stat)
            .iter()
            .filter_map(|(p, n)| d.get(p).map(|d| n / d))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), r| {
                (lo.min(r), hi.max(r))
            })
    }

    /// Requests and errors over every sample of `name`.
    pub(crate) fn totals(&self, name: &str) -> (u64, u64) {
        let ms = self.by_name.get(name).map(Vec::as_slice).unwrap_or(&[]);
        (
            ms.iter().map(|(_, m)| m.requests).sum(),
            ms.iter().map(|(_, m)| m.errors).sum(),
        )
    }
}

/// Measures every configuration on `p.processes` processes each.
pub(crate) fn run_rounds(
    p: &EnvoyParams,
    configs: &[Config],
    tck: f64,
    check: Check<'_>,
) -> Result<Results, BenchError> {
    let mut results = Results::default();
    for process in 0..p.processes.max(1) {
        // Rotate the order per generation: no configuration always goes first.
        let mut order: Vec<&Config> = configs.iter().collect();
        order.rotate_left(process % configs.len().max(1));
        let envoys = start_generation(p, &order)?;
        for round in 0..p.repeats {
            for (name, envoy, url) in &envoys {
                let m = measure(envoy, url, p, tck)?;
                progress(&format!(
                    "concurrency {} process {} round {} {name}: {:.2} µs CPU/req, p50 {:.0} µs, p99 {:.0} µs, {:.0} req/s, {} requests, {} errors, steal {:.1}%",
                    p.concurrency, process + 1, round + 1, m.cpu_us_per_req, m.p50_us, m.p99_us, m.rps, m.requests, m.errors, m.steal * 100.0
                ));
                let samples = results.by_name.entry(name.clone()).or_default();
                results
                    .rounds
                    .entry(name.clone())
                    .or_default()
                    .insert((process, round), samples.len());
                samples.push((process, m));
            }
        }
        for (name, envoy, _) in &envoys {
            check(name, envoy)?;
        }
    }
    Ok(results)
}

/// Starts one process per configuration, pinned, and warms each up.
fn start_generation(
    p: &EnvoyParams,
    configs: &[&Config],
) -> Result<Vec<(String, EnvoyProcess, String)>, BenchError> {
    let mut envoys = Vec::new();
    for (name, generated, layout) in configs {
        let opts = EnvoyOptions {
            concurrency: p.concurrency,
            log_level: "error".into(),
            ..EnvoyOptions::default()
        };
        let envoy =
            EnvoyProcess::start(layout, generated, &opts).map_err(|e| format!("{name}: {e}"))?;
        pin(envoy.pid(), p.envoy_cpus.as_deref().unwrap_or("0-1"));
        let addr = envoy.listener().map_err(|e| e.to_string())?;
        envoys.push((name.clone(), envoy, format!("http://{addr}/")));
    }
    for (name, _, url) in &envoys {
        progress(&format!(
            "concurrency {}: warm-up {name} ({}s)",
            p.concurrency, p.warmup
        ));
        run_wrk(
            url,
            p.connections,
            p.wrk_threads,
            p.warmup,
            p.client_cpus.as_deref(),
        )?;
    }
    Ok(envoys)
}

pub(crate) fn envoy_phases(seconds: u32, repeats: usize, processes: usize) -> [EnvoyParams; 2] {
    let phase = |concurrency, envoy_cpus: Option<&str>, client_cpus: Option<&str>| EnvoyParams {
        concurrency,
        connections: 8,
        wrk_threads: 1,
        seconds,
        warmup: 2,
        repeats,
        processes,
        envoy_cpus: envoy_cpus.map(str::to_string),
        client_cpus: client_cpus.map(str::to_string),
    };
    [phase(1, Some("1"), Some("0")), phase(2, None, None)]
}

/// The least disturbed of a process's samples.
pub(crate) fn lowest(v: &mut [f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}
