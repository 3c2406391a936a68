//! Human-friendly durations and sizes, as written on the command line and in
//! scenario files: `500ms`, `10s`, `2m`, `1h`, `30d`; `512`, `64KiB`, `1MiB`, `2MB`.

use std::time::Duration;

/// Parse `"250ms"`, `"10s"`, `"1.5s"`, `"2m"`, `"1h"`, `"30d"`. A bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| {
        format!("{text:?} is not a duration; write it like \"500ms\", \"10s\", \"2m\", \"1h\" or \"30d\"")
    })?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        other => {
            return Err(format!("unknown unit {other:?} in {text:?}; use ms, s, m, h or d"));
        }
    };
    if !seconds.is_finite() || !(0.0..=1e9).contains(&seconds) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parse a size in bytes: `"4096"`, `"64KiB"`, `"1MiB"`, `"10MB"`, `"1GiB"`.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: usize =
        number.parse().map_err(|_| format!("{text:?} is not a size; write it like \"4096\", \"64KiB\" or \"1MiB\""))?;
    let multiplier: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => return Err(format!("unknown unit {other:?} in {text:?}; use B, KiB, MiB or GiB")),
    };
    value.checked_mul(multiplier).ok_or_else(|| format!("{text:?} is too large"))
}

/// A duration as people read it: `850µs`, `12.3ms`, `4.20s`, `3m05s`.
pub fn format_duration(duration: Duration) -> String {
    let micros = duration.as_micros();
    if micros < 1000 {
        format!("{micros}µs")
    } else if micros < 100_000 {
        format!("{:.2}ms", micros as f64 / 1000.0)
    } else if micros < 1_000_000 {
        format!("{:.1}ms", micros as f64 / 1000.0)
    } else if micros < 60_000_000 {
        format!("{:.2}s", micros as f64 / 1e6)
    } else {
        let secs = duration.as_secs();
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

/// A byte rate as people read it: `850 B/s`, `12.3 KiB/s`, `4.20 MiB/s`.
pub fn format_bytes_rate(per_second: f64) -> String {
    format!("{}/s", format_bytes(per_second))
}

/// A byte count as people read it: `850 B`, `12.3 KiB`, `4.20 MiB`, `1.50 GiB`.
pub fn format_bytes(bytes: f64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024.0 {
        return format!("{bytes:.0} B");
    }
    let mut value = bytes / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.digits$} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_rates_read_like_people_write_them() {
        assert_eq!(format_bytes_rate(850.0), "850 B/s");
        assert_eq!(format_bytes_rate(12.3 * 1024.0), "12.3 KiB/s");
        assert_eq!(format_bytes_rate(4.2 * 1024.0 * 1024.0), "4.20 MiB/s");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 days").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("1 MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("2MB").unwrap(), 2_000_000);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("1XB").is_err());
    }

    #[test]
    fn formatting() {
        assert_eq!(format_duration(Duration::from_micros(850)), "850µs");
        assert_eq!(format_duration(Duration::from_micros(12_345)), "12.35ms");
        assert_eq!(format_duration(Duration::from_millis(4200)), "4.20s");
        assert_eq!(format_duration(Duration::from_secs(185)), "3m05s");
    }
}
