//! `make demo`, part 2 (after `demo`): the guide's steps 3, 4 and 6 on the
//! waypoint-shaped Envoy (`host_harness::waypoint::demo`).
//!
//! ```text
//! waypoint_demo [--wasm FILE]
//! ```
//! `scripts/demo.sh` passes its arguments to both demos: options of the
//! first part (`--config-dir DIR`, ...) are ignored here.
//! Exit 0: every step as the guide expects; 1: a step differed; 2: the
//! demo could not run.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let wasm = match args.iter().position(|a| a == "--wasm") {
        None => None,
        Some(i) => match args.get(i + 1) {
            Some(file) => Some(PathBuf::from(file)),
            None => {
                eprintln!("usage: waypoint_demo [--wasm FILE]");
                return ExitCode::from(2);
            }
        },
    };
    match host_harness::waypoint::demo::run(wasm) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("waypoint demo: {e}");
            ExitCode::from(2)
        }
    }
}
