//! When Envoy created a cluster, from `/config_dump`'s `last_updated`.
//!
//! Envoy arms a cluster's outlier-detection interval timer when it creates
//! the cluster (`outlier_detection_impl.cc` `DetectorImpl::initialize`), so
//! its sweeps fall a whole number of intervals after this instant. A runner
//! that wants the sweeps where a scenario puts them (at multiples of the
//! interval from t = 0) starts its clock on one of those instants.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::EnvoyProcess;

impl EnvoyProcess {
    /// When the cluster `name` (static or dynamic) was created or last
    /// replaced; None if the admin does not answer or does not know it.
    pub fn cluster_created(&self, name: &str) -> Option<SystemTime> {
        ["dynamic_active_clusters", "static_clusters"]
            .iter()
            .find_map(|resource| {
                let body = self
                    .admin_get(&format!("/config_dump?resource={resource}"))
                    .ok()?;
                last_updated(&serde_json::from_str(&body).ok()?, name)
            })
    }
}

/// `last_updated` of the entry whose cluster is `name` in a config dump of
/// cluster resources.
fn last_updated(dump: &Value, name: &str) -> Option<SystemTime> {
    dump.get("configs")?
        .as_array()?
        .iter()
        .find(|c| c.pointer("/cluster/name").and_then(Value::as_str) == Some(name))
        .and_then(|c| c.get("last_updated")?.as_str())
        .and_then(parse_timestamp)
}

/// A protobuf JSON `Timestamp` (`2026-12-07T23:11:30.831Z`: UTC, 0 to 9
/// fractional digits).
pub fn parse_timestamp(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(str::parse::<i64>);
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(str::parse::<u64>);
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: u32 = format!("{frac:0<9}").parse().ok()?;
    let days = u64::try_from(days_from_civil(y, m, day)).ok()?;
    let secs = days * 86_400 + hh * 3_600 + mm * 60 + ss;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secs(t: SystemTime) -> f64 {
        t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
    }

    #[test]
    fn timestamps_parse_to_unix_time() {
        // date -u -d 2026-12-07T23:11:30Z +%s
        assert_eq!(
            secs(parse_timestamp("2026-12-07T23:11:30Z").unwrap()),
            1_796_685_090.0
        );
        let t = parse_timestamp("2026-12-07T23:11:30.831Z").unwrap();
        assert!((secs(t) - 1_796_685_090.831).abs() < 1e-6);
        let t = parse_timestamp("2024-02-29T00:00:00.000000001Z").unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().subsec_nanos(), 1);
        assert_eq!(secs(parse_timestamp("1970-01-01T00:00:00Z").unwrap()), 0.0);
    }

    #[test]
    fn malformed_timestamps_are_refused() {
        for s in [
            "2026-12-07T23:11:30",
            "2026-12-07 23:11:30Z",
            "2026-13-07T23:11:30Z",
            "2026-12-07T24:00:00Z",
            "2026-12-07T23:11:30.1234567890Z",
            "2026-12-07T23:11:30.8a1Z",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(parse_timestamp(s), None, "{s}");
        }
    }

    #[test]
    fn the_named_clusters_entry_is_read() {
        let dump = json!({ "configs": [
            { "cluster": { "name": "a" }, "last_updated": "2026-12-07T23:11:30.500Z" },
            { "cluster": { "name": "b" }, "last_updated": "2026-12-07T23:11:31Z" },
        ]});
        assert_eq!(secs(last_updated(&dump, "b").unwrap()), 1_796_685_091.0);
        assert_eq!(last_updated(&dump, "c"), None);
    }
}
