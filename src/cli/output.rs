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
}
