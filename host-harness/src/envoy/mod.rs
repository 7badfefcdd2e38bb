//! Real-Envoy building blocks for the scenario runner's `envoy` and `native`
//! modes and for end-to-end tests.
//!
//! - [`upstream`]: loopback HTTP/1.1 upstreams whose behaviour (healthy, an
//!   HTTP status, connection refused) is switched at run time.
//! - [`process`]: starts `envoy` on a generated config, waits until it is
//!   ready, reads the admin interface, applies CDS/EDS file updates.
//! - [`client`]: a minimal blocking HTTP/1.1 client.
//! - [`config`]: JSON config generators (filter mode with the three steering
//!   setups, native EDS mode) and a small YAML writer for readable examples.
//! - [`accesslog`]: counts upstream attempts per endpoint from the access
//!   log the generated configs write.
//! - [`created`]: when Envoy created a cluster (and armed its outlier
//!   detector's interval timer).
//!
//! Everything is std-only and loopback-only. See `envoy/NOTES.md` (repository root)
//! for the facts checked on the real binary.

pub mod accesslog;
pub mod client;
pub mod config;
pub mod created;
pub mod process;
pub mod upstream;

pub use accesslog::{AccessLog, Attempt, AttemptCounts, RequestLine};
pub use client::{http_get, http_request, HttpConnection, HttpResponse};
pub use config::{
    Endpoint, FilterModeConfig, Frontend, Generated, Layout, LbPolicy, NativeModeConfig, Node,
    OutlierDetection, RetryPolicy, Steering, WasmFilter,
};
pub use process::{envoy_binary, EnvoyError, EnvoyOptions, EnvoyProcess, HostStatus};
pub use upstream::{Behavior, RecordedRequest, UpstreamState, Upstreams};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Polls `pred` every 10 ms until it returns true or `timeout` passes.
/// Returns whether it became true (it is always evaluated at least once, and
/// once more at the deadline).
pub fn wait_until(timeout: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if pred() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10).min(deadline - now));
    }
}

/// A directory under the system temp dir, removed (recursively) on drop
/// unless the environment variable `LF_KEEP_ENVOY_DIR` is set.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> std::io::Result<TempDir> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "lf-{prefix}-{}-{}-{nanos:x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("LF_KEEP_ENVOY_DIR").is_some() {
            eprintln!("keeping {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
