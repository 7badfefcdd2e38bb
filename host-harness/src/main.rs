//! `host-harness`: the scenario runner and config lint.
//!
//! ```text
//! host-harness run [--mode sim|envoy|native|waypoint] [--time-scale F] [--declare] FILE...
//! host-harness lint CONFIG.json
//! host-harness rank FILE...
//! ```
//! Exit 0 when every expectation holds, 1 when one does not, 2 when a file
//! is invalid (the message names the file and the field).

use std::path::PathBuf;
use std::process::ExitCode;

use host_harness::modes::{self, Mode, RunOptions};
use host_harness::scenario::Scenario;

fn usage() -> ExitCode {
    eprintln!(
        "usage: host-harness run [--mode sim|envoy|native|waypoint] [--time-scale F] [--wasm PATH] [--workers N] [--declare] FILE..."
    );
    eprintln!("       host-harness lint CONFIG.json");
    eprintln!("       host-harness rank FILE...");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") => run(args.get(1..).unwrap_or_default()),
        Some("lint") => lint(args.get(1..).unwrap_or_default()),
        Some("rank") => rank(args.get(1..).unwrap_or_default()),
        _ => usage(),
    }
}

fn run(args: &[String]) -> ExitCode {
    let mut options = RunOptions::default();
    let mut files = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--mode" => match it.next().map(|m| m.parse::<Mode>()) {
                Some(Ok(m)) => options.mode = m,
                _ => return usage(),
            },
            "--time-scale" => match it.next().and_then(|v| v.parse::<f64>().ok()) {
                Some(f) if f > 0.0 && f <= 1.0 => options.time_scale = Some(f),
                _ => {
                    eprintln!("--time-scale takes a number in (0, 1]");
                    return ExitCode::from(2);
                }
            },
            "--wasm" => match it.next() {
                Some(p) => options.wasm = Some(PathBuf::from(p)),
                None => return usage(),
            },
            "--declare" => options.declare = true,
            "--workers" => match it.next().and_then(|v| v.parse::<usize>().ok()) {
                Some(w) if (1..=64).contains(&w) => options.workers = Some(w),
                _ => return usage(),
            },
            f if f.starts_with("--") => return usage(),
            f => files.push(PathBuf::from(f)),
        }
    }
    if files.is_empty() {
        return usage();
    }
    let mut scenarios = Vec::new();
    for f in &files {
        match Scenario::load(f) {
            Ok(s) => scenarios.push(s),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        }
    }
    let mut failed = false;
    for scenario in &scenarios {
        let outcome = modes::play(scenario, &options);
        let (results, mismatches) = match outcome {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{}: {e}", scenario.name);
                return ExitCode::from(2);
            }
        };
        for r in &results {
            match serde_json::to_string(r) {
                Ok(line) => println!("{line}"),
                Err(e) => eprintln!("cannot print result: {e}"),
            }
        }
        for m in &mismatches {
            eprintln!("FAIL {} / {}: {}", scenario.name, m.step, m.message);
            failed = true;
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn lint(args: &[String]) -> ExitCode {
    let [file] = args else { return usage() };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{file}: {e}");
            return ExitCode::from(2);
        }
    };
    let value: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{file}: not JSON: {e}");
            return ExitCode::from(2);
        }
    };
    match locality_failover::lint::lint_json(&value) {
        Ok(findings) if findings.is_empty() => {
            println!("{file}: ok");
            ExitCode::SUCCESS
        }
        Ok(findings) => {
            for f in findings {
                println!("{file}: warning: {f}");
            }
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("{file}: {e}");
            ExitCode::from(2)
        }
    }
}

fn rank(args: &[String]) -> ExitCode {
    for f in args {
        let scenario = match Scenario::load(std::path::Path::new(f)) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
        match modes::ranking(&scenario) {
            Ok(rows) => {
                println!("{}", scenario.name);
                for (name, priority) in rows {
                    println!("  P{priority}  {name}");
                }
            }
            Err(e) => {
                eprintln!("{f}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    ExitCode::SUCCESS
}
