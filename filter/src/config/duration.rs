//! Durations as Istio writes them in a DestinationRule: Go's `time.Duration`
//! syntax (`"10s"`, `"3m"`, `"1m30s"`, `"100ms"`, `"1.5s"`), which is also what
//! protobuf's JSON mapping accepts for `google.protobuf.Duration` (`"0.1s"`).

use std::time::Duration;

/// Why a duration string was refused. The caller adds the field name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("negative durations are not allowed")]
    Negative,
    #[error("missing unit (use ns, us, ms, s, m or h)")]
    MissingUnit,
    #[error("unknown unit {0:?} (use ns, us, ms, s, m or h)")]
    UnknownUnit(String),
    #[error("not a number before the unit")]
    BadNumber,
    #[error("out of range")]
    Overflow,
}

/// Parses a Go-style duration. Fractions are allowed on every component.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s.starts_with('-') {
        return Err(DurationError::Negative);
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total_ns: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or(DurationError::MissingUnit)?;
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." {
            return Err(DurationError::BadNumber);
        }
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            other => return Err(DurationError::UnknownUnit(other.to_string())),
        };
        total_ns = total_ns
            .checked_add(component_ns(num, unit_ns)?)
            .ok_or(DurationError::Overflow)?;
        rest = next;
    }
    let ns = u64::try_from(total_ns).map_err(|_| DurationError::Overflow)?;
    Ok(Duration::from_nanos(ns))
}

/// `num` is `digits[.digits]`; computed in integers so `"0.1s"` is exactly 100ms.
fn component_ns(num: &str, unit_ns: u128) -> Result<u128, DurationError> {
    let (int_part, frac_part) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if frac_part.contains('.') {
        return Err(DurationError::BadNumber);
    }
    let int: u128 = if int_part.is_empty() {
        0
    } else {
        int_part.parse().map_err(|_| DurationError::BadNumber)?
    };
    let mut ns = int.checked_mul(unit_ns).ok_or(DurationError::Overflow)?;
    let mut scale = unit_ns;
    for digit in frac_part.chars().take(18) {
        scale /= 10;
        let d = u128::from(digit.to_digit(10).ok_or(DurationError::BadNumber)?);
        ns = ns.checked_add(d * scale).ok_or(DurationError::Overflow)?;
    }
    Ok(ns)
}

/// Formats a duration the way Istio users write it (for logs and the lint).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return format!("{}ns", d.as_nanos());
    }
    if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn istio_forms() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("3m"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2m30s"), Ok(Duration::from_secs(150)));
        assert_eq!(parse_duration("0.1s"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_duration("-1s"), Err(DurationError::Negative));
        assert_eq!(parse_duration("10"), Err(DurationError::MissingUnit));
        assert!(matches!(
            parse_duration("10d"),
            Err(DurationError::UnknownUnit(_))
        ));
        assert_eq!(parse_duration("s"), Err(DurationError::BadNumber));
        assert_eq!(parse_duration("1.2.3s"), Err(DurationError::BadNumber));
        assert_eq!(
            parse_duration("99999999999999999999h"),
            Err(DurationError::Overflow)
        );
    }

    #[test]
    fn formats_back() {
        assert_eq!(format_duration(Duration::from_secs(180)), "3m");
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    }
}
