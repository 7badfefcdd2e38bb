//! YAML writer (for the readable examples). Block style; strings are quoted
//! (JSON style, which YAML accepts) unless they are plainly safe.

use super::*;

/// Renders a JSON value as block-style YAML.
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => write_map(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => write_seq(&mut out, a, 0),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

pub(super) fn is_block(v: &Value) -> bool {
    match v {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

/// Keys in output order: `@type`, `name`, then the rest (alphabetical).
pub(super) fn ordered(m: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let rank = |k: &str| match k {
        "@type" => 0,
        "name" => 1,
        _ => 2,
    };
    let mut v: Vec<(&String, &Value)> = m.iter().collect();
    v.sort_by(|a, b| rank(a.0).cmp(&rank(b.0)).then_with(|| a.0.cmp(b.0)));
    v
}

pub(super) fn write_map(out: &mut String, m: &Map<String, Value>, indent: usize) {
    for (k, v) in ordered(m) {
        out.push_str(&" ".repeat(indent));
        out.push_str(&yaml_string(k));
        out.push(':');
        write_value_after_key(out, v, indent);
    }
}

pub(super) fn write_value_after_key(out: &mut String, v: &Value, indent: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            write_map(out, m, indent + 2);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            write_seq(out, a, indent);
        }
        Value::String(s) if s.contains('\n') => {
            // Multi-line strings (access log formats) stay JSON-quoted.
            out.push(' ');
            out.push_str(&Value::String(s.clone()).to_string());
            out.push('\n');
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

pub(super) fn write_seq(out: &mut String, a: &[Value], indent: usize) {
    for item in a {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match item {
            Value::Object(m) if !m.is_empty() => {
                // First key on the dash line, the rest indented under it.
                let mut first = true;
                for (k, v) in ordered(m) {
                    if first {
                        out.push(' ');
                        first = false;
                    } else {
                        out.push_str(&" ".repeat(indent + 2));
                    }
                    out.push_str(&yaml_string(k));
                    out.push(':');
                    write_value_after_key(out, v, indent + 2);
                }
            }
            v if is_block(v) => {
                out.push('\n');
                if let Value::Array(inner) = v {
                    write_seq(out, inner, indent + 2);
                }
            }
            other => {
                out.push(' ');
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
}

pub(super) fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => yaml_string(s),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        other => other.to_string(),
    }
}

pub(super) fn yaml_string(s: &str) -> String {
    const RESERVED: &[&str] = &[
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~", "True", "False", "Yes",
        "No", "On", "Off", "Y", "N", "NULL", "Null", "TRUE", "FALSE", "YES", "NO", "ON", "OFF",
    ];
    let safe_chars = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'));
    let starts_ok = s
        .chars()
        .next()
        .map(|c| c.is_ascii_alphabetic() || c == '/' || c == '_')
        .unwrap_or(false);
    if safe_chars && starts_ok && !RESERVED.contains(&s) {
        s.to_string()
    } else {
        Value::String(s.to_string()).to_string()
    }
}
