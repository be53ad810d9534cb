//! Human-readable figures shared by the UI and the CLI.

/// Standard base64 (with padding): what OSC 52 carries to the terminal's clipboard, and embeddings
/// as OpenAI's `base64` encoding.
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
pub fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A UTC date (seconds since the epoch) in strftime's date fields: %d %e %m %y %Y %b %B %%
/// (what chat templates ask `strftime_now` for, e.g. Llama 3's "%d %b %Y").
pub fn strftime_date(fmt: &str, secs: i64) -> String {
    const MONTHS: [&str; 12] = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
    let (y, m, d) = civil(secs.div_euclid(86400));
    let month = MONTHS[(m - 1) as usize];
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('e') => out.push_str(&format!("{d:>2}")),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('y') => out.push_str(&format!("{:02}", y % 100)),
            Some('Y') => out.push_str(&y.to_string()),
            Some('b') => out.push_str(&month[..3]),
            Some('B') => out.push_str(month),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// 1536 -> "1.5 KiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// `1m23s`-style durations.
pub fn duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s / 60 % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// A curve as block characters, averaged down to at most `width` points.
pub fn sparkline(v: &[f64], width: usize) -> String {
    if v.is_empty() {
        return String::new();
    }
    let bars = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let n = v.len().min(width).max(1);
    let chunk = v.len().div_ceil(n);
    let pts: Vec<f64> = v.chunks(chunk).map(|c| c.iter().sum::<f64>() / c.len() as f64).collect();
    let lo = pts.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = pts.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    pts.iter()
        .map(|&p| bars[if hi > lo { (((p - lo) / (hi - lo)) * 7.0).round() as usize } else { 0 }])
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_format_like_strftime() {
        // 2026-11-26 12:00 UTC
        let t = 1_795_694_400;
        assert_eq!(super::strftime_date("%d %b %Y", t), "26 Nov 2026");
        assert_eq!(super::strftime_date("%Y-%m-%d, %B %e, '%y %%", t), "2026-11-26, November 26, '26 %");
        assert_eq!(super::civil(0), (1970, 1, 1));
    }

    #[test]
    fn base64_matches_the_rfc_examples() {
        for (i, o) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")] {
            assert_eq!(super::base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(super::bytes(512), "512 B");
        assert_eq!(super::bytes(1536), "1.5 KiB");
        assert_eq!(super::bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(super::duration(83.0), "1m23s");
        assert_eq!(super::duration(3725.0), "1h02m");
        assert_eq!(super::sparkline(&[3.0, 2.0, 1.0], 10), "█▅▁");
    }
}
