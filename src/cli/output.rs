//! Output helpers shared by commands: `--format`, JSON printing, human sizes.

use anyhow::Result;

/// `--format` of listing and inspect commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// Pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Sizes as Docker prints them (1.5GiB, 512MiB, 10KiB, 12B).
pub fn human_bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}{}", UNITS[unit])
    } else {
        format!("{value:.3}",)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + UNITS[unit]
    }
}

/// Prints rows under headers in columns padded by three spaces, as Docker's tables.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    print_lines(&table(headers, rows));
}

/// Prints text on stdout, ignoring a closed pipe (`... | head`), which must not panic.
pub fn print_lines(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// The table as a string (tested).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(cell);
                out.push_str(&" ".repeat(widths[i] - cell.chars().count() + 3));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Docker's human durations: "Less than a second", "5 seconds", "About a minute", "3 hours".
pub fn human_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    let (m, h) = (s / 60, s / 3600);
    match () {
        _ if s < 1 => "Less than a second".into(),
        _ if s == 1 => "1 second".into(),
        _ if s < 60 => format!("{s} seconds"),
        _ if m == 1 => "About a minute".into(),
        _ if m < 60 => format!("{m} minutes"),
        _ if h == 1 => "About an hour".into(),
        _ if h < 48 => format!("{h} hours"),
        _ if h < 24 * 7 * 2 => format!("{} days", h / 24),
        _ if h < 24 * 30 * 2 => format!("{} weeks", h / 24 / 7),
        _ if h < 24 * 365 * 2 => format!("{} months", h / 24 / 30),
        _ => format!("{} years", h / 24 / 365),
    }
}

/// "5 minutes ago" for a point in time.
pub fn time_ago(t: shoal_proto::Timestamp) -> String {
    let ago = std::time::SystemTime::now()
        .duration_since(t.to_system_time())
        .unwrap_or_default();
    format!("{} ago", human_duration(ago))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(human_bytes(12), "12B");
        assert_eq!(human_bytes(10 * 1024), "10KiB");
        assert_eq!(human_bytes(1536 * 1024 * 1024), "1.5GiB");
        assert_eq!(human_bytes(2 * 1024 * 1024 * 1024), "2GiB");
    }

    #[test]
    fn tables_and_durations_read_like_docker() {
        let t = table(
            &["A", "LONG HEADER", "C"],
            &[vec!["xx".into(), "y".into(), "z".into()]],
        );
        assert_eq!(t, "A    LONG HEADER   C\nxx   y             z\n");
        let d = std::time::Duration::from_secs;
        assert_eq!(human_duration(d(0)), "Less than a second");
        assert_eq!(human_duration(d(42)), "42 seconds");
        assert_eq!(human_duration(d(90)), "About a minute");
        assert_eq!(human_duration(d(3 * 3600)), "3 hours");
        assert_eq!(human_duration(d(3 * 86400)), "3 days");
    }
}
