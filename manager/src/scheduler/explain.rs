//! Turning per-filter failure counts into the "why pending" message users read.
//!
//! Every node that cannot take a task is charged to the first filter that refused it, so the
//! counts add up to the cluster's size and the message says what to change (add a label, free
//! memory) rather than just "no suitable node". Parts are ordered by how many nodes they cover,
//! largest first, then by filter order, so the message is stable from one pass to the next and
//! the store is not rewritten with a reshuffled but identical reason.

/// The message for a task that fits nowhere, from `(node count, filter order, explanation)`
/// parts, one per filter that refused at least one node.
pub(crate) fn no_suitable_node(mut parts: Vec<(usize, usize, String)>) -> String {
    if parts.is_empty() {
        return "no suitable node (the cluster has no nodes)".to_string();
    }
    // (count, order, text): most nodes first, then filter order.
    parts.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let texts: Vec<String> = parts.into_iter().map(|(_, _, t)| t).collect();
    format!("no suitable node ({})", texts.join("; "))
}

/// "1 node" or "3 nodes".
pub(crate) fn nodes(n: usize) -> String {
    if n == 1 {
        "1 node".to_string()
    } else {
        format!("{n} nodes")
    }
}

/// The verb form agreeing with a node count: `verb(n, "lacks", "lack")`.
pub(crate) fn verb<'a>(n: usize, singular: &'a str, plural: &'a str) -> &'a str {
    if n == 1 { singular } else { plural }
}

/// Sizes as the CLI prints them (4GiB, 1.5GiB, 512MiB, 12B).
pub fn human_bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value.abs() >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{}{}", trim_decimals(value), UNITS[unit])
}

/// CPU amounts from nano-CPUs, with an adjective before the unit: ("2 unreserved CPUs",
/// "1 unreserved CPU", "0.5 unreserved CPUs").
pub fn human_cpus(nano_cpus: i64, adjective: &str) -> String {
    let cpus = nano_cpus as f64 / 1e9;
    let unit = if nano_cpus == 1_000_000_000 {
        "CPU"
    } else {
        "CPUs"
    };
    format!("{} {adjective} {unit}", trim_decimals(cpus))
}

/// Up to three decimals, without trailing zeros ("1.5", "2", "0.125").
fn trim_decimals(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_cpus_read_like_the_cli() {
        assert_eq!(human_bytes(12), "12B");
        assert_eq!(human_bytes(4 << 30), "4GiB");
        assert_eq!(human_bytes(1536 << 20), "1.5GiB");
        assert_eq!(human_bytes(512 << 20), "512MiB");
        assert_eq!(human_cpus(2_000_000_000, "free"), "2 free CPUs");
        assert_eq!(human_cpus(1_000_000_000, "free"), "1 free CPU");
        assert_eq!(human_cpus(500_000_000, "free"), "0.5 free CPUs");
    }

    #[test]
    fn parts_sorted_by_count_then_filter_order() {
        let msg = no_suitable_node(vec![
            (1, 3, "1 node fails constraint node.labels.zone==a".into()),
            (2, 5, "2 nodes lack 4GiB of unreserved memory".into()),
            (1, 0, "1 node is not ready".into()),
        ]);
        assert_eq!(
            msg,
            "no suitable node (2 nodes lack 4GiB of unreserved memory; 1 node is not ready; \
             1 node fails constraint node.labels.zone==a)"
        );
        assert_eq!(nodes(1), "1 node");
        assert_eq!(verb(3, "lacks", "lack"), "lack");
    }
}
