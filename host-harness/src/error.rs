//! The harness's one error type: everything that can stop a scenario run or
//! the demo, by what went wrong, with the name or value involved.

use locality_failover::config::ConfigError;
use locality_failover::inventory::InventoryError;

use crate::envoy::EnvoyError;
use crate::scenario::ScenarioError;

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A scenario file that does not parse or validate.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// A plugin configuration the filter's parser refuses.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An inventory the filter refuses.
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    /// Envoy failed while the harness was doing `what`.
    #[error("{what}: {source}")]
    Envoy {
        what: String,
        #[source]
        source: EnvoyError,
    },
    /// A file, socket or process operation on `what` failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A `kind` (endpoint, listener, upstream…) named `name` that the run
    /// does not have.
    #[error("no {kind} {name}")]
    Unknown { kind: &'static str, name: String },
    /// `field` = `value` cannot be played here, because `reason`.
    #[error("{field} {value}: {reason}")]
    Unsupported {
        field: String,
        value: String,
        reason: String,
    },
    /// Something the run needs is not there (the envoy binary, the built
    /// filter); `hint` says how to get it.
    #[error("{what} not found: {hint}")]
    Missing { what: String, hint: String },
    /// Traffic through Envoy did not go as the harness needs (no answer, a
    /// missing header or access log line).
    #[error("{0}")]
    Traffic(String),
    /// A file the demo reads is not what it expects.
    #[error("{file}: {message}")]
    File { file: String, message: String },
    /// A command-line argument.
    #[error("{0}")]
    Usage(String),
}

impl HarnessError {
    /// An I/O error while doing `what`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
        let what = what.into();
        move |source| HarnessError::Io { what, source }
    }

    /// An Envoy error while doing `what`.
    pub fn envoy(what: impl Into<String>) -> impl FnOnce(EnvoyError) -> HarnessError {
        let what = what.into();
        move |source| HarnessError::Envoy { what, source }
    }

    /// A name of `kind` the run does not have.
    pub fn unknown(kind: &'static str, name: impl Into<String>) -> HarnessError {
        HarnessError::Unknown {
            kind,
            name: name.into(),
        }
    }
}

pub type Result<T, E = HarnessError> = std::result::Result<T, E>;
