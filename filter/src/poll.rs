//! The shared-data side of the `envoy` inventory source: one VM per Envoy
//! polls the admin (a lease), publishes what it read, versioned, and every
//! VM adopts the published inventory on its tick.
//!
//! Keys, under the configured prefix (`@` keeps them apart from the
//! per-cluster keys of [`crate::shared::ClusterKeys`]):
//! - `<p>/@envoy/lease`: 16 bytes, holder id and expiry (ns), u64 LE each.
//!   Taken with a CAS when missing, expired or already ours; it expires
//!   after a few poll periods, so another VM takes over if the holder stops.
//! - `<p>/@envoy/routed`: the clusters requests were routed to, one name
//!   per line, appended (CAS) the first time a VM sees a new one.
//! - `<p>/@envoy/inventory`: the published inventory ([`encode`]).
//! - `<p>/@envoy/version`: its version, u64 LE, written after it: the tick
//!   reads these 8 bytes and fetches the inventory only when they moved.
//! - `<p>/@envoy/condition`, `<p>/@envoy/locality`: the failure classes
//!   logged since the admin last answered well, and the inferred locality
//!   as logged, so a line is logged once per Envoy even when the lease
//!   moves or every VM infers.

use crate::admin::AdminHost;
use crate::host::{decode, Host, HostError};
use crate::shared::CAS_ATTEMPTS;

/// Most cluster names kept in the routed list.
pub const MAX_ROUTED: usize = 64;
/// Most hosts per cluster accepted from a published inventory.
const MAX_HOSTS: usize = crate::inventory::MAX_ENDPOINTS;
const MAGIC: &[u8; 4] = b"LFI1";

/// The key layout of the `envoy` source, written once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollKeys {
    pub lease: String,
    pub routed: String,
    pub inventory: String,
    pub version: String,
    pub condition: String,
    pub locality: String,
}

impl PollKeys {
    pub fn new(prefix: &str) -> Self {
        let base = format!("{prefix}/@envoy");
        PollKeys {
            lease: format!("{base}/lease"),
            routed: format!("{base}/routed"),
            inventory: format!("{base}/inventory"),
            version: format!("{base}/version"),
            condition: format!("{base}/condition"),
            locality: format!("{base}/locality"),
        }
    }
}

/// Takes or renews the lease for `me` until `until`. `Ok(false)`: another
/// VM holds it (or won the race).
pub fn take_lease(
    host: &mut dyn Host,
    keys: &PollKeys,
    me: u64,
    now: u64,
    until: u64,
) -> Result<bool, HostError> {
    let (value, cas) = host.shared_data(&keys.lease)?;
    if let Some(v) = value {
        let holder = v.get(..8).and_then(decode::u64_le);
        let expiry = v.get(8..16).and_then(decode::u64_le);
        if let (Some(holder), Some(expiry)) = (holder, expiry) {
            if holder != me && expiry > now {
                return Ok(false);
            }
        }
    }
    let mut bytes = me.to_le_bytes().to_vec();
    bytes.extend_from_slice(&until.to_le_bytes());
    match host.set_shared_data(&keys.lease, &bytes, cas) {
        Ok(()) => Ok(true),
        Err(HostError::CasMismatch) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Records `text` under `key` unless it is already there; `true` when this
/// VM recorded it (and so logs it). A host error says log (better twice
/// than never).
pub fn first_to_record(host: &mut dyn Host, key: &str, text: &str) -> bool {
    let Ok((value, cas)) = host.shared_data(key) else {
        return true;
    };
    if value.as_deref() == Some(text.as_bytes()) {
        return false;
    }
    !matches!(
        host.set_shared_data(key, text.as_bytes(), cas),
        Err(HostError::CasMismatch)
    )
}

/// Adds `class` to the failure classes of the current failing streak
/// (one per line under `key`); `true` when it was not there yet and this VM
/// added it (and so logs it). A host error says log.
pub fn add_failure_class(host: &mut dyn Host, key: &str, class: &str) -> bool {
    let Ok((value, cas)) = host.shared_data(key) else {
        return true;
    };
    let mut text = value
        .and_then(|v| String::from_utf8(v).ok())
        .unwrap_or_default();
    if text.lines().any(|l| l == class) {
        return false;
    }
    text.push_str(class);
    text.push('\n');
    !matches!(
        host.set_shared_data(key, text.as_bytes(), cas),
        Err(HostError::CasMismatch)
    )
}

/// The routed clusters every VM recorded.
pub fn routed(host: &dyn Host, keys: &PollKeys) -> Result<Vec<String>, HostError> {
    let (value, _) = host.shared_data(&keys.routed)?;
    let text = value
        .and_then(|v| String::from_utf8(v).ok())
        .unwrap_or_default();
    Ok(text
        .lines()
        .filter(|l| !l.is_empty())
        .take(MAX_ROUTED)
        .map(str::to_string)
        .collect())
}

/// Adds `cluster` to the routed list. `Ok(false)` when the list is full.
pub fn record_routed(
    host: &mut dyn Host,
    keys: &PollKeys,
    cluster: &str,
) -> Result<bool, HostError> {
    for _ in 0..CAS_ATTEMPTS {
        let (value, cas) = host.shared_data(&keys.routed)?;
        let mut text = value
            .and_then(|v| String::from_utf8(v).ok())
            .unwrap_or_default();
        let names: Vec<&str> = text.lines().collect();
        if names.contains(&cluster) {
            return Ok(true);
        }
        if names.len() >= MAX_ROUTED {
            return Ok(false);
        }
        text.push_str(cluster);
        text.push('\n');
        match host.set_shared_data(&keys.routed, text.as_bytes(), cas) {
            Ok(()) => return Ok(true),
            Err(HostError::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(HostError::CasMismatch)
}

/// The published version (`None` before the first publication).
pub fn version(host: &dyn Host, keys: &PollKeys) -> Result<Option<u64>, HostError> {
    let (value, _) = host.shared_data(&keys.version)?;
    Ok(value.and_then(|v| decode::u64_le(&v)))
}

/// Publishes `clusters` as the next version; returns it.
pub fn publish(
    host: &mut dyn Host,
    keys: &PollKeys,
    clusters: &[(String, Vec<AdminHost>)],
) -> Result<u64, HostError> {
    let next = version(host, keys)?.unwrap_or(0).wrapping_add(1);
    host.set_shared_data(&keys.inventory, &encode(next, clusters), None)?;
    host.set_shared_data(&keys.version, &next.to_le_bytes(), None)?;
    Ok(next)
}

/// An inventory as published.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Published {
    pub version: u64,
    pub clusters: Vec<(String, Vec<AdminHost>)>,
}

/// Reads the published inventory; `None` when missing or corrupt.
pub fn read_published(host: &dyn Host, keys: &PollKeys) -> Result<Option<Published>, HostError> {
    let (value, _) = host.shared_data(&keys.inventory)?;
    Ok(value.and_then(|v| decode_published(&v)))
}

/// `LFI1`, version u64, cluster count u32, then per cluster its name and
/// host count, then per host: address, region, zone, sub_zone, cluster id
/// (strings: u32 length + UTF-8), weight u32, priority u32, flags u8 (bit 0
/// healthy, bit 1 remote network). All integers little endian.
pub fn encode(version: u64, clusters: &[(String, Vec<AdminHost>)]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(64 + clusters.iter().map(|(_, h)| h.len() * 80).sum::<usize>());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    put_u32(&mut out, clusters.len());
    for (name, hosts) in clusters {
        put_str(&mut out, name);
        put_u32(&mut out, hosts.len());
        for h in hosts {
            for s in [&h.address, &h.region, &h.zone, &h.sub_zone] {
                put_str(&mut out, s);
            }
            put_str(&mut out, h.cluster_id.as_deref().unwrap_or(""));
            out.extend_from_slice(&h.weight.to_le_bytes());
            out.extend_from_slice(&h.priority.to_le_bytes());
            out.push(u8::from(h.healthy) | u8::from(h.remote_network) << 1);
        }
    }
    out
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// Bounds-checked inverse of [`encode`]: anything short, long, oversized or
/// not UTF-8 is `None` (the caller keeps what it had).
pub fn decode_published(bytes: &[u8]) -> Option<Published> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(4)? != MAGIC {
        return None;
    }
    let version = decode::u64_le(r.take(8)?)?;
    let count = r.count(crate::config::envoy_source::MAX_CLUSTERS.max(MAX_ROUTED))?;
    let mut clusters = Vec::with_capacity(count);
    for _ in 0..count {
        let name = r.string()?;
        let n = r.count(MAX_HOSTS)?;
        let mut hosts = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            hosts.push(r.host()?);
        }
        clusters.push((name, hosts));
    }
    (r.at == bytes.len()).then_some(Published { version, clusters })
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }

    fn u32(&mut self) -> Option<u32> {
        let b: [u8; 4] = self.take(4)?.try_into().ok()?;
        Some(u32::from_le_bytes(b))
    }

    fn count(&mut self, max: usize) -> Option<usize> {
        usize::try_from(self.u32()?).ok().filter(|n| *n <= max)
    }

    fn string(&mut self) -> Option<String> {
        let n = self.count(self.bytes.len())?;
        std::str::from_utf8(self.take(n)?).ok().map(str::to_string)
    }

    fn host(&mut self) -> Option<AdminHost> {
        let address = self.string()?;
        let region = self.string()?;
        let zone = self.string()?;
        let sub_zone = self.string()?;
        let cluster_id = Some(self.string()?).filter(|s| !s.is_empty());
        let weight = self.u32()?;
        let priority = self.u32()?;
        let flags = *self.take(1)?.first()?;
        Some(AdminHost {
            address,
            region,
            zone,
            sub_zone,
            weight,
            priority,
            healthy: flags & 1 != 0,
            cluster_id,
            remote_network: flags & 2 != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn sample() -> Vec<(String, Vec<AdminHost>)> {
        vec![(
            "inbound-vip|8000|http|svc".into(),
            vec![
                AdminHost {
                    address: "envoy://connect_originate/10.1.2.3:8080".into(),
                    region: "r".into(),
                    zone: "z".into(),
                    sub_zone: String::new(),
                    weight: 3,
                    priority: 1,
                    healthy: false,
                    cluster_id: Some("c1".into()),
                    remote_network: true,
                },
                AdminHost {
                    address: "10.0.0.1:80".into(),
                    weight: 1,
                    healthy: true,
                    ..Default::default()
                },
            ],
        )]
    }

    #[test]
    fn round_trips() {
        let bytes = encode(7, &sample());
        let p = decode_published(&bytes).unwrap();
        assert_eq!(p.version, 7);
        assert_eq!(p.clusters, sample());
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        let bytes = encode(7, &sample());
        for n in 0..bytes.len() {
            assert_eq!(decode_published(&bytes[..n]), None, "cut at {n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode_published(&longer), None);
        let mut huge_count = bytes.clone();
        huge_count[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_published(&huge_count), None);
        assert_eq!(decode_published(b"LFI2xxxxxxxx"), None);
    }
}
