//! Fuzz regressions: every input saved under `fuzz/regressions/<target>/`
//! is replayed through the same driver the cargo-fuzz target runs, and
//! must not panic (a panic is a crash of Envoy's worker VM, or a broken
//! invariant of the engine).
//!
//! The drivers are the `fuzz-drivers` crate the cargo-fuzz targets call,
//! so an input decodes here exactly as it did under libFuzzer. Overflow
//! checks are on under libFuzzer and off in `--release` tests: an
//! arithmetic-overflow crash only reproduces in a debug `cargo test`.
//!
//! A saved input that still fails is listed in [`KNOWN`] and replayed by
//! its own `#[ignore]`d test, which says why; once fixed, drop both and the
//! per-target test covers it.

use std::path::{Path, PathBuf};

use fuzz_drivers::drivers;

/// Saved inputs that still fail: (target, file name). Each has an ignored
/// test below.
const KNOWN: &[(&str, &str)] = &[];

fn dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target)
}

fn inputs(target: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir(target))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file() && p.extension().is_none_or(|e| e != "md"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn run(target: &str, data: &[u8]) {
    match target {
        "config" => drivers::config::run(data),
        "metadata" => drivers::metadata::run(data),
        "engine" => drivers::engine::run(data),
        "filter" => drivers::filter::run(data),
        other => panic!("unknown fuzz target {other}"),
    }
}

/// Replays one input; `Err` with the panic message if it panicked.
fn replay(target: &str, path: &Path) -> Result<(), String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    std::panic::catch_unwind(|| run(target, &data)).map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".to_string())
    })
}

fn replay_all(target: &str) {
    let mut failures = Vec::new();
    for path in inputs(target) {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if KNOWN.iter().any(|(t, f)| *t == target && *f == name) {
            continue;
        }
        if let Err(message) = replay(target, &path) {
            failures.push(format!("{}: {message}", path.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} saved {target} input(s) panic:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// Used by the `#[ignore]`d test of a KNOWN input, when there is one.
#[allow(dead_code)]
fn replay_known(target: &str, name: &str) {
    if let Err(message) = replay(target, &dir(target).join(name)) {
        panic!("fuzz/regressions/{target}/{name} still panics: {message}");
    }
}

#[test]
fn config_regressions() {
    replay_all("config");
}

#[test]
fn metadata_regressions() {
    replay_all("metadata");
}

#[test]
fn engine_regressions() {
    replay_all("engine");
}

#[test]
fn filter_regressions() {
    replay_all("filter");
}
