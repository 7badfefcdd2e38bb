//! Outlier state in proxy-wasm shared data, so every Envoy worker VM sees
//! one set of streaks and ejections (Envoy's own detector is one per
//! cluster, on the main thread).
//!
//! Keys, under the configured prefix and the cluster name:
//! - `<p>/<cluster>/streak/<ip:port>`: 12 bytes, three u32 LE counters,
//!   written only when a failure is counted or a streak is reset;
//! - `<p>/<cluster>/table`: the [`EjectionTable`] as JSON, written only when
//!   an endpoint is ejected or returns, or a sweep runs;
//! - `<p>/<cluster>/epoch`: the table's generation, u64 LE. The request path
//!   reads only this 8-byte key and fetches the table when it moved.
//!
//! Every write is a compare-and-swap on the token read with the value;
//! on a mismatch the update is recomputed from the fresh value and retried.
//! Envoy creates a missing key on any write, so keys are created up front
//! (when an inventory is loaded) to keep increments from racing a creation.

use crate::detector::OutlierStore;
use crate::host::{Host, HostError};
use crate::outlier::{EjectionTable, Streaks};

/// Attempts before a contended update gives up (and the caller logs it).
pub const CAS_ATTEMPTS: usize = 64;

/// The shared-data key layout of one cluster, written once: every key the
/// filter reads or writes is built here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterKeys {
    /// `<prefix>/<cluster>`.
    base: String,
    /// `<prefix>/<cluster>/epoch`, kept built: the request path reads it.
    epoch: String,
}

impl ClusterKeys {
    pub fn new(prefix: &str, cluster: &str) -> Self {
        let base = format!("{prefix}/{cluster}");
        ClusterKeys {
            epoch: format!("{base}/epoch"),
            base,
        }
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    pub fn table(&self) -> String {
        format!("{}/table", self.base)
    }

    pub fn streak(&self, address: &str) -> String {
        let mut key = String::new();
        self.streak_into(&mut key, address);
        key
    }

    /// Writes `<prefix>/<cluster>/streak/<address>` into a reused buffer.
    pub fn streak_into(&self, buf: &mut String, address: &str) {
        buf.clear();
        buf.push_str(&self.base);
        buf.push_str("/streak/");
        buf.push_str(address);
    }
}

pub struct SharedStore<'h> {
    host: &'h mut dyn Host,
    keys: ClusterKeys,
}

impl<'h> SharedStore<'h> {
    pub fn new(host: &'h mut dyn Host, keys: &ClusterKeys) -> Self {
        SharedStore {
            host,
            keys: keys.clone(),
        }
    }

    fn streak_key(&self, address: &str) -> String {
        self.keys.streak(address)
    }

    fn table_key(&self) -> String {
        self.keys.table()
    }

    fn epoch_key(&self) -> String {
        self.keys.epoch().to_string()
    }

    pub fn table(&self) -> Result<EjectionTable, HostError> {
        let (value, _) = self.host.shared_data(&self.table_key())?;
        Ok(value.map(|v| decode_table(&v)).unwrap_or_default())
    }

    /// Creates the streak keys of `addresses` that do not exist yet.
    pub fn ensure_streaks<'a>(
        &mut self,
        addresses: impl Iterator<Item = &'a str>,
    ) -> Result<(), HostError> {
        for address in addresses {
            let key = self.streak_key(address);
            if self.host.shared_data(&key)?.0.is_none() {
                self.host
                    .set_shared_data(&key, &encode_streaks(&Streaks::default()), None)?;
            }
        }
        Ok(())
    }

    fn publish_epoch(&mut self, generation: u64) -> Result<(), HostError> {
        let key = self.epoch_key();
        for _ in 0..CAS_ATTEMPTS {
            let (value, cas) = self.host.shared_data(&key)?;
            let current = value.and_then(|v| crate::host::decode::u64_le(&v));
            // Generations only grow (wrapping after 2^64 writes); an epoch at
            // or past this one needs no write.
            if current.is_some_and(|c| c.wrapping_sub(generation) < u64::MAX / 2) {
                return Ok(());
            }
            match self
                .host
                .set_shared_data(&key, &generation.to_le_bytes(), cas)
            {
                Ok(()) => return Ok(()),
                Err(HostError::CasMismatch) => {}
                Err(e) => return Err(e),
            }
        }
        Err(HostError::CasMismatch)
    }
}

impl OutlierStore for SharedStore<'_> {
    fn update_streaks(
        &mut self,
        address: &str,
        f: &mut dyn FnMut(&mut Streaks) -> bool,
    ) -> Result<(), HostError> {
        let key = self.streak_key(address);
        for _ in 0..CAS_ATTEMPTS {
            let (value, cas) = self.host.shared_data(&key)?;
            let mut s = value.map(|v| decode_streaks(&v)).unwrap_or_default();
            if !f(&mut s) {
                return Ok(());
            }
            match self.host.set_shared_data(&key, &encode_streaks(&s), cas) {
                Ok(()) => return Ok(()),
                Err(HostError::CasMismatch) => {}
                Err(e) => return Err(e),
            }
        }
        Err(HostError::CasMismatch)
    }

    fn update_table(
        &mut self,
        f: &mut dyn FnMut(&mut EjectionTable) -> bool,
    ) -> Result<(), HostError> {
        let key = self.table_key();
        for _ in 0..CAS_ATTEMPTS {
            let (value, cas) = self.host.shared_data(&key)?;
            let mut table = value.map(|v| decode_table(&v)).unwrap_or_default();
            if !f(&mut table) {
                return Ok(());
            }
            let bytes = serde_json::to_vec(&table).map_err(|e| HostError::Call {
                call: "encode ejection table",
                status: e.to_string(),
            })?;
            match self.host.set_shared_data(&key, &bytes, cas) {
                Ok(()) => return self.publish_epoch(table.generation),
                Err(HostError::CasMismatch) => {}
                Err(e) => return Err(e),
            }
        }
        Err(HostError::CasMismatch)
    }
}

/// The hot-path epoch read, with a precomputed key (no allocation besides
/// the host's buffer).
pub fn read_epoch(host: &dyn Host, epoch_key: &str) -> Result<Option<u64>, HostError> {
    let (value, _) = host.shared_data(epoch_key)?;
    Ok(value.and_then(|v| crate::host::decode::u64_le(&v)))
}

/// One endpoint's streaks by precomputed key (missing key: zero).
pub fn read_streaks(host: &dyn Host, streak_key: &str) -> Result<Streaks, HostError> {
    let (value, _) = host.shared_data(streak_key)?;
    Ok(value.map(|v| decode_streaks(&v)).unwrap_or_default())
}

pub fn encode_streaks(s: &Streaks) -> [u8; 12] {
    let mut out = [0u8; 12];
    for (chunk, v) in out
        .chunks_exact_mut(4)
        .zip([s.c5xx, s.gateway, s.local_origin])
    {
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    out
}

/// Anything that is not 12 bytes reads as zero streaks (a corrupt value is
/// overwritten by the next write instead of poisoning the endpoint).
pub fn decode_streaks(bytes: &[u8]) -> Streaks {
    let word = |i: usize| {
        bytes
            .get(i * 4..i * 4 + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
            .unwrap_or(0)
    };
    if bytes.len() != 12 {
        return Streaks::default();
    }
    Streaks {
        c5xx: word(0),
        gateway: word(1),
        local_origin: word(2),
    }
}

/// A table that does not decode reads as empty (no ejections): failing open
/// keeps traffic flowing; the next write replaces it.
pub fn decode_table(bytes: &[u8]) -> EjectionTable {
    serde_json::from_slice(bytes).unwrap_or_default()
}
