//! The guide's steps 3, 4 and 6 on a real Envoy 1.40 (`make demo`; the
//! binary `src/bin/demo.rs` is its command line).
//!
//! `../shared/reference/multicluster-zone-region-failover-guide.txt` walks a
//! client in cluster 1 (network `cluster1-network`, region `us-east-1`, zone
//! `us-east-1a`) through failover between the `in-ambient` pods of two
//! clusters. Here a local Envoy running the filter plays the cluster-1
//! waypoint, and loopback HTTP servers play the pods
//! ([`crate::fixtures::guide`]).
//!
//! - [`files`]: the shared files (`envoy/demo/envoy.yaml` + `cds.yaml`, the
//!   ones `envoy/docker-compose.yaml` mounts) and their localisation;
//! - [`steps`]: the guide's steps as a table of actions, played by one loop;
//! - [`run`]: the Envoy run, one phase's requests and report, the summary;
//! - [`expect`]: what a phase must show, and the summary rows.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::envoy::config::Layout;
use crate::envoy::{
    envoy_binary, http_get, Behavior, EnvoyOptions, EnvoyProcess, Generated, TempDir, Upstreams,
};
use locality_failover::config::{
    RankingSource, Settings, TrafficDistribution, LABEL_NETWORK, LABEL_REGION, LABEL_ZONE,
};
use locality_failover::inventory::{EndpointSpec, Inventory};
use locality_failover::ranking::rank;
use serde_json::{json, Value};

use crate::error::{HarnessError, Result};

pub mod expect;
pub mod files;
pub mod run;
pub mod steps;

pub use files::DemoFiles;
pub use run::run;

use expect::*;
use files::*;
use run::*;
use steps::*;

/// What the shared files say for the docker-compose deployment; the demo
/// replaces exactly these.
pub(crate) const COMPOSE_WASM: &str = "/etc/envoy/locality_failover.wasm";
pub(crate) const COMPOSE_CDS: &str = "/etc/envoy/demo/cds.yaml";
pub(crate) const COMPOSE_DIR: &str = "/etc/envoy/demo";
pub(crate) const COMPOSE_LOG: &str = "/dev/stdout";
pub(crate) const METADATA_NAMESPACE: &str = "locality-failover";
pub(crate) const METRIC_PREFIX: &str = "wasmcustom.locality_failover.";
/// What the guide's client calls.
pub(crate) const HOST: &str = "in-ambient.httpbin.mesh.internal:8000";
pub(crate) const PATH: &str = "/hostname";
pub(crate) const T: Duration = Duration::from_secs(10);

pub(crate) const ABC: &str = crate::fixtures::guide::ABC.name;
pub(crate) const DEF: &str = crate::fixtures::guide::DEF.name;
pub(crate) const XYZ: &str = crate::fixtures::guide::XYZ.name;
pub(crate) const UVW: &str = crate::fixtures::guide::UVW.name;

pub(crate) const LISTENER_STEP3: &str = "step3-prefer-network";
pub(crate) const LISTENER_STEP4: &str = "step4-prefer-close";
pub(crate) const LISTENER_GUIDE_DR: &str = "step6-zone-region";
pub(crate) const LISTENER_FIXED_DR: &str = "step6-network-region-zone";

/// The command line of the `demo` binary.
pub struct Options {
    pub wasm: PathBuf,
    pub config_dir: PathBuf,
    pub work_dir: Option<PathBuf>,
    pub state_file: Option<PathBuf>,
    pub describe: bool,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Options> {
        let mut o = Options {
            wasm: PathBuf::from("build/locality_failover.wasm"),
            config_dir: PathBuf::from("envoy/demo"),
            work_dir: None,
            state_file: None,
            describe: false,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || {
                it.next()
                    .map(PathBuf::from)
                    .ok_or_else(|| HarnessError::Usage(format!("{a} needs a value")))
            };
            match a.as_str() {
                "--wasm" => o.wasm = value()?,
                "--config-dir" => o.config_dir = value()?,
                "--work-dir" => o.work_dir = Some(value()?),
                "--state-file" => o.state_file = Some(value()?),
                "--describe" => o.describe = true,
                other => return Err(HarnessError::Usage(format!("unknown argument {other:?}"))),
            }
        }
        Ok(o)
    }
}
