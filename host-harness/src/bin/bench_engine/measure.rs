//! Measuring an Envoy process: CPU time, wrk, pinning, interleaved rounds.

use crate::BenchError;
use std::process::{Command, Stdio};

use crate::rounds::EnvoyParams;
use host_harness::envoy::EnvoyProcess;

pub(crate) fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .filter(|v| *v > 0.0)
        .unwrap_or(100.0)
}

/// utime + stime of a process, in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)`; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time of every thread of a process, in ns, from the scheduler's
/// own account (`/proc/<pid>/task/*/schedstat`, first field): exact where
/// `utime + stime` counts 10 ms ticks, which matters for short samples.
/// `None` when any thread's account cannot be read.
pub(crate) fn cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let text = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// CPU seconds a process has used: [`cpu_ns`], or the ticks of `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32, tck: f64) -> Option<f64> {
    cpu_ns(pid)
        .map(|ns| ns as f64 / 1e9)
        .or_else(|| cpu_ticks(pid).map(|t| t as f64 / tck))
}

pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[derive(Clone, Debug, Default)]
pub(crate) struct WrkResult {
    pub(crate) requests: u64,
    pub(crate) seconds: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) errors: u64,
}

pub(crate) fn parse_latency(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, mult) = if let Some(v) = s.strip_suffix("us") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1e3)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1e6)
    } else {
        (s, 1.0)
    };
    num.trim().parse::<f64>().ok().map(|v| v * mult)
}

pub(crate) fn run_wrk(
    url: &str,
    connections: u32,
    threads: u32,
    seconds: u32,
    cpus: Option<&str>,
) -> Result<WrkResult, BenchError> {
    let mut cmd = Command::new("nice");
    cmd.args(["-n", NICE]);
    match cpus {
        Some(c) => cmd.args(["taskset", "-c", c, "wrk"]),
        None => cmd.arg("wrk"),
    };
    let out = cmd
        .args([
            "-t",
            &threads.to_string(),
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
            "--latency",
            url,
        ])
        .output()
        .map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut r = WrkResult::default();
    for line in text.lines() {
        let t = line.trim();
        let parts: Vec<&str> = t.split_whitespace().collect();
        match parts.as_slice() {
            ["50%", v] => r.p50_us = parse_latency(v).unwrap_or(f64::NAN),
            ["99%", v] => r.p99_us = parse_latency(v).unwrap_or(f64::NAN),
            [n, "requests", "in", secs, ..] => {
                r.requests = n.parse().unwrap_or(0);
                r.seconds = parse_latency(secs.trim_end_matches(','))
                    .map(|us| us / 1e6)
                    .unwrap_or(0.0);
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => r.errors += n.parse::<u64>().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                // "connect 0, read 0, write 0, timeout 0"
                r.errors += rest
                    .iter()
                    .filter_map(|x| x.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    if r.requests == 0 {
        return Err(BenchError::from(format!(
            "wrk gave no result:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(r)
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Measurement {
    pub(crate) cpu_us_per_req: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) rps: f64,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    /// Share of the machine's CPU time the hypervisor took (steal) while
    /// the sample ran: the noise a VM cannot see otherwise.
    pub(crate) steal: f64,
}

/// (steal, total) jiffies of all CPUs, from `/proc/stat`.
pub(crate) fn steal_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice;
    // guest time is already counted in user.
    let steal = *fields.get(7)?;
    let total = fields.iter().take(8).sum();
    Some((steal, total))
}

pub(crate) fn measure(
    envoy: &EnvoyProcess,
    url: &str,
    c: &EnvoyParams,
    tck: f64,
) -> Result<Measurement, BenchError> {
    let pid = envoy.pid();
    let before = cpu_seconds(pid, tck).ok_or("cannot read /proc/<envoy>/stat")?;
    let steal_before = steal_ticks();
    let w = run_wrk(
        url,
        c.connections,
        c.wrk_threads,
        c.seconds,
        c.client_cpus.as_deref(),
    )?;
    let after = cpu_seconds(pid, tck).ok_or("cannot read /proc/<envoy>/stat")?;
    let steal = match (steal_before, steal_ticks()) {
        (Some((s0, t0)), Some((s1, t1))) if t1 > t0 => (s1 - s0) as f64 / (t1 - t0) as f64,
        _ => f64::NAN,
    };
    let cpu_s = after - before;
    Ok(Measurement {
        cpu_us_per_req: cpu_s * 1e6 / w.requests as f64,
        p50_us: w.p50_us,
        p99_us: w.p99_us,
        rps: w.requests as f64 / w.seconds.max(1e-9),
        requests: w.requests,
        errors: w.errors,
        steal,
    })
}

/// Niceness of everything the Envoy benchmark runs (Envoy, wrk, the
/// upstream): on a machine shared with builds and tests, the measured
/// processes get the CPU first, which keeps the numbers steadier.
pub(crate) const NICE: &str = "-10";

/// Pins every thread of `pid` to `cpus` and gives them [`NICE`].
pub(crate) fn pin(pid: u32, cpus: &str) {
    let _ = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let tids: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    if !tids.is_empty() {
        let _ = Command::new("renice")
            .args(["-n", NICE, "-p"])
            .args(&tids)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
