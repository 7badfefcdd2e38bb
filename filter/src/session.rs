//! The value of Envoy's `envoy.http.stateful_session.header` session state:
//! standard base64 (with padding) of the host's address exactly as Envoy
//! keys it (`ip:port`, or `envoy://connect_originate/<ip:port>` for a
//! waypoint's internal-address endpoints).
//!
//! Checked on Envoy 1.40.0: when the stateful-session filter picks by itself
//! it writes this header back on the response, e.g.
//! `ZW52b3k6Ly9jb25uZWN0X29yaWdpbmF0ZS8xMjcuMC4wLjI6MTgwODA=` for
//! `envoy://connect_originate/127.0.0.2:18080` and `MTI3LjAuMC40OjE4MDgw`
//! for `127.0.0.4:18080`; a value of that form sent on a request makes
//! Envoy take that host (unless it holds it unhealthy), whatever the
//! cluster's LB policy.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Appends base64(`prefix` + `address`) to `out`.
pub fn encode_into(prefix: &str, address: &str, out: &mut String) {
    let mut bytes = prefix.bytes().chain(address.bytes());
    while let Some(a) = bytes.next() {
        let b = bytes.next();
        let c = bytes.next();
        let n = u32::from(a) << 16 | u32::from(b.unwrap_or(0)) << 8 | u32::from(c.unwrap_or(0));
        let sextet = |shift: u32| {
            char::from(
                ALPHABET
                    .get(((n >> shift) & 63) as usize)
                    .copied()
                    .unwrap_or(b'A'),
            )
        };
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if b.is_some() { sextet(6) } else { '=' });
        out.push(if c.is_some() { sextet(0) } else { '=' });
        if c.is_none() {
            break;
        }
    }
}

/// Decodes a session value (for tests and the harness); `None` when it
/// is not padded standard base64 of UTF-8.
pub fn decode(value: &str) -> Option<String> {
    let mut bits: u32 = 0;
    let mut count = 0u32;
    let mut out = Vec::new();
    let body = value.trim_end_matches('=');
    if value.len() % 4 != 0 || value.len() - body.len() > 2 {
        return None;
    }
    for c in body.bytes() {
        let v = ALPHABET.iter().position(|a| *a == c)?;
        bits = bits << 6 | v as u32;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push(((bits >> count) & 0xff) as u8);
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn encode(prefix: &str, address: &str) -> String {
        let mut s = String::new();
        encode_into(prefix, address, &mut s);
        s
    }

    #[test]
    fn matches_what_envoy_1_40_writes_back() {
        assert_eq!(
            encode("", "envoy://connect_originate/127.0.0.2:18080"),
            "ZW52b3k6Ly9jb25uZWN0X29yaWdpbmF0ZS8xMjcuMC4wLjI6MTgwODA="
        );
        assert_eq!(encode("", "127.0.0.4:18080"), "MTI3LjAuMC40OjE4MDgw");
        assert_eq!(
            encode("envoy://connect_originate/", "127.0.0.2:18080"),
            encode("", "envoy://connect_originate/127.0.0.2:18080")
        );
    }

    #[test]
    fn padding_and_round_trip() {
        for (s, e) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
        ] {
            assert_eq!(encode("", s), e);
            assert_eq!(decode(e).as_deref(), Some(s));
        }
        assert_eq!(decode("Zg="), None);
        assert_eq!(decode("Z!=="), None);
    }
}
