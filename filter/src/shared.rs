//! Outlier state in proxy-wasm shared data, so every Envoy worker VM sees
//! one set of streaks and ejections (Envoy's own detector is one per
//! cluster, on the main thread).
//!
//! Keys, under the configured prefix and the cluster name:
//! - `<p>/<cluster>/streak/<ip:port>`: 12 bytes, three u32 LE counters,
//!   written only when a failure is counted or a streak is reset;
//! - `<p>/<cluster>/table`: the [`EjectionTable`] as JSON, written only when
//!   an endpoint is ejected or returns, or a sweep runs;
//! - `<p>/<cluster>/epoch`: the table's generation, u64 LE, then the
//!   "streaks dirtied" count, u64 LE: bumped each time a streak leaves zero.
//!   A VM reads only this 16-byte key (at most once per
//!   [`crate::filter::VIEW_REFRESH`] and on every tick), fetches the table
//!   when the generation moved, and forgets which endpoints it knew to have
//!   no streak when the dirtied count moved.
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
    /// The streaks as the last `update_streaks` left them (written or not).
    pub last_streaks: Option<Streaks>,
}

impl<'h> SharedStore<'h> {
    pub fn new(host: &'h mut dyn Host, keys: &ClusterKeys) -> Self {
        SharedStore {
            host,
            keys: keys.clone(),
            last_streaks: None,
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
        self.update_view(&mut |view| {
            // Generations only grow (wrapping after 2^64 writes); an epoch at
            // or past this one needs no write.
            let current = view.generation;
            if view.present && current.wrapping_sub(generation) < u64::MAX / 2 {
                return false;
            }
            view.generation = generation;
            true
        })
    }

    /// Counts a streak that left zero, so that VMs forget which endpoints
    /// they knew to have none.
    fn dirty_streaks(&mut self) -> Result<(), HostError> {
        self.update_view(&mut |view| {
            view.dirtied = view.dirtied.wrapping_add(1);
            true
        })
    }

    /// Read-modify-write of the epoch key (CAS, retried), keeping the field
    /// `f` does not touch.
    fn update_view(&mut self, f: &mut dyn FnMut(&mut View) -> bool) -> Result<(), HostError> {
        let key = self.epoch_key();
        for _ in 0..CAS_ATTEMPTS {
            let (value, cas) = self.host.shared_data(&key)?;
            let mut view = value.map(|v| View::decode(&v)).unwrap_or_default();
            if !f(&mut view) {
                return Ok(());
            }
            match self.host.set_shared_data(&key, &view.encode(), cas) {
                Ok(()) => return Ok(()),
                Err(HostError::CasMismatch) => {}
                Err(e) => return Err(e),
            }
        }
        Err(HostError::CasMismatch)
    }
}

/// The epoch key's value: what a VM compares to know its view is current.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct View {
    /// The ejection table's generation.
    pub generation: u64,
    /// How many times a streak left zero (any endpoint of the cluster).
    pub dirtied: u64,
    /// Whether the key held a generation (internal: a missing key reads as
    /// generation 0 for the writers).
    present: bool,
}

impl View {
    /// 8 bytes (generation only, as written before the dirtied count
    /// existed) or 16; a shorter value is no generation, a missing count zero.
    pub fn decode(bytes: &[u8]) -> View {
        let generation = crate::host::decode::u64_le(bytes);
        View {
            generation: generation.unwrap_or(0),
            dirtied: bytes
                .get(8..)
                .and_then(crate::host::decode::u64_le)
                .unwrap_or(0),
            present: generation.is_some(),
        }
    }

    pub fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.generation.to_le_bytes());
        out[8..].copy_from_slice(&self.dirtied.to_le_bytes());
        out
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
            let before = value.map(|v| decode_streaks(&v)).unwrap_or_default();
            let mut s = before;
            if !f(&mut s) {
                self.last_streaks = Some(s);
                return Ok(());
            }
            self.last_streaks = Some(s);
            match self.host.set_shared_data(&key, &encode_streaks(&s), cas) {
                // After the streak is written: a VM that sees the new count
                // and reads the streak finds it non-zero.
                Ok(()) if before.is_zero() && !s.is_zero() => return self.dirty_streaks(),
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

/// The epoch read, with a precomputed key (no allocation besides the
/// host's buffer). `None`: no generation published yet.
pub fn read_view(host: &dyn Host, epoch_key: &str) -> Result<Option<View>, HostError> {
    let (value, _) = host.shared_data(epoch_key)?;
    Ok(value.map(|v| View::decode(&v)).filter(|v| v.present))
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

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn the_epoch_value_round_trips_and_reads_the_old_8_byte_form() {
        let v = View::decode(
            &View {
                generation: 7,
                dirtied: 3,
                present: true,
            }
            .encode(),
        );
        assert_eq!((v.generation, v.dirtied, v.present), (7, 3, true));
        let old = View::decode(&9u64.to_le_bytes());
        assert_eq!((old.generation, old.dirtied, old.present), (9, 0, true));
        let corrupt = View::decode(&[1, 2, 3]);
        assert!(!corrupt.present, "too short: no generation");
        let twelve = View::decode(&[0u8; 12]);
        assert_eq!((twelve.generation, twelve.dirtied), (0, 0));
    }
}
