//! Durations as Docker's flags take them: Go durations (`1m30s`, `500ms`, `2160h`, plus `d` for
//! days). Errors name the flag and show a valid example.

use std::time::Duration;

/// Parses a Go-style duration; `flag` names the flag in errors.
pub fn parse_duration(flag: &str, input: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "{flag} {input:?} is not a duration; use a number with a unit, e.g. 30s, 1m30s, 500ms or 2160h"
        )
    };
    let s = input.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return Err(bad()),
        };
        total += value * seconds;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_go() {
        let d = |s| parse_duration("--x", s).unwrap();
        assert_eq!(d("5s"), Duration::from_secs(5));
        assert_eq!(d("1m30s"), Duration::from_secs(90));
        assert_eq!(d("500ms"), Duration::from_millis(500));
        assert_eq!(d("2160h"), Duration::from_secs(90 * 86400));
        assert_eq!(d("90d"), Duration::from_secs(90 * 86400));
        assert_eq!(d("0"), Duration::ZERO);
        let e = parse_duration("--restart-delay", "5").unwrap_err();
        assert!(e.contains("--restart-delay") && e.contains("30s"), "{e}");
        assert!(parse_duration("--x", "s5").is_err());
        assert!(parse_duration("--x", "5 parsecs").is_err());
    }
}
