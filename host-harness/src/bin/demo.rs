//! `make demo`: the guide's steps 3, 4 and 6 on a real Envoy 1.40.
//!
//! `../shared/reference/multicluster-zone-region-failover-guide.txt` walks a
//! client in cluster 1 (network `cluster1-network`, region `us-east-1`, zone
//! `us-east-1a`) through failover between the `in-ambient` pods of two
//! clusters. Here a local Envoy running the filter plays the cluster-1
//! waypoint, and loopback HTTP servers play the pods:
//!
//! ```text
//! in-ambient-7d8f9b6c54-abc12  cluster 1  us-east-1 / us-east-1a
//! in-ambient-7d8f9b6c54-def34  cluster 1  us-east-1 / us-east-1b
//! in-ambient-8e9f0c7d65-xyz98  cluster 2  us-west-2 / us-west-2a
//! in-ambient-8e9f0c7d65-uvw56  cluster 2  us-west-2 / us-west-2b
//! ```
//!
//! Envoy runs on `envoy/demo/envoy.yaml` + `envoy/demo/cds.yaml`, the files
//! `envoy/docker-compose.yaml` mounts, with only the deployment-specific
//! values substituted (pod addresses, paths, ports; see the files' headers).
//! Scaling a deployment or deleting a pod is a CDS update that removes the
//! pod from the cluster and from the inventory in its metadata; a failing
//! pod is an upstream answering 503 or refusing connections.
//!
//! For each step it prints what the guide shows (the `sort | uniq -c` table
//! of which pod answered), the filter's decision (the ranking, and the
//! deltas of its `wasmcustom.locality_failover.*` metrics and its log lines),
//! and PASS/FAIL against the expectation; then a summary. Exit status: 0 all
//! passed, 1 a step differed, 2 the demo could not run.
//!
//! ```text
//! demo [--wasm build/locality_failover.wasm] [--config-dir envoy/demo]
//!      [--work-dir DIR] [--state-file FILE]
//! demo --describe [--config-dir envoy/demo]   # what it reads, as JSON
//! ```
//! `--state-file` receives `<envoy pid> <base id>` once Envoy runs, so that
//! `scripts/demo.sh` can stop it even if this process is killed.

use std::process::ExitCode;

use host_harness::demo::{run, DemoFiles, Options};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match Options::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("demo: {e}");
            eprintln!("usage: demo [--wasm FILE] [--config-dir DIR] [--work-dir DIR] [--state-file FILE] | demo --describe [--config-dir DIR]");
            return ExitCode::from(2);
        }
    };
    let files = match DemoFiles::load(&opts.config_dir) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::from(2);
        }
    };
    if opts.describe {
        return match serde_json::to_string_pretty(&files.describe()) {
            Ok(s) => {
                println!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("demo: {e}");
                ExitCode::from(2)
            }
        };
    }
    match run(&opts, &files) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("\ndemo: {e}");
            ExitCode::from(2)
        }
    }
}
