//! Output: one tab-separated `ROW` line per result (stdout), progress on
//! stderr, and the number formats the table uses.

use std::io::Write;

pub(crate) fn row(bench: &str, what: &str, measured: &str, target: &str, verdict: &str) {
    println!("ROW\t{bench}\t{what}\t{measured}\t{target}\t{verdict}");
    let _ = std::io::stdout().flush();
}

pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

pub(crate) fn progress(msg: &str) {
    eprintln!("bench: {msg}");
}

pub(crate) fn human_bytes(b: f64) -> String {
    if b < 0.0 {
        return format!("-{}", human_bytes(-b));
    }
    if b >= 1024.0 * 1024.0 {
        format!("{:.2} MiB", b / 1024.0 / 1024.0)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

pub(crate) fn human_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
