//! Outbound NAT and forwarding for the bridge, in nftables.
//!
//! Our rules live in our own table (`table ip shoal`), in two chains named after the bridge, so
//! they can be rewritten wholesale at every start without touching anyone else's:
//!
//! ```text
//!  nat_<bridge>  (postrouting, srcnat):  ip saddr <subnet> oifname != <bridge>  masquerade
//!  fwd_<bridge>  (forward, filter):      iifname <bridge>                        accept
//!                                        oifname <bridge> ct state est,related   accept
//!                                        oifname <bridge>                        drop
//! ```
//!
//! The last rule isolates tasks as Docker's default bridge does: other machines cannot open
//! connections to task addresses even if they route the subnet to this node.
//!
//! The catch: in netfilter every base chain on a hook votes, and a drop anywhere is final. An
//! accept in our chain does not save a packet that another table's forward chain drops by
//! policy, which is what Docker leaves behind (iptables FORWARD policy DROP; with br_netfilter,
//! bridged traffic between two tasks crosses it too). So, like Docker for its own bridge, we
//! add accept rules for our bridge at the top of every foreign forward chain whose policy is
//! drop: through nft for nftables-based tables (iptables-nft, which Debian uses by default),
//! and through `iptables-legacy` when the legacy backend drops too. Rules we add elsewhere
//! carry the comment `shoal:<bridge>`, so they are found again instead of piling up.

use std::process::Stdio;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::error::{NetworkError, Result};
use crate::subnet::Subnet;

/// Our table, shared by every bridge this node runs.
pub const TABLE: &str = "shoal";

/// Marks rules we insert into other tables' chains.
pub fn comment(bridge: &str) -> String {
    format!("shoal:{bridge}")
}

/// A chain name from the bridge name (nft identifiers: letters, digits, '_').
fn chain(kind: &str, bridge: &str) -> String {
    let safe: String = bridge
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{kind}_{safe}")
}

/// The script that (re)creates our chains; idempotent, applied atomically by `nft -f`.
pub fn bridge_rules(bridge: &str, subnet: Subnet) -> String {
    let nat = chain("nat", bridge);
    let fwd = chain("fwd", bridge);
    format!(
        "add table ip {TABLE}\n\
         add chain ip {TABLE} {nat} {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         add chain ip {TABLE} {fwd} {{ type filter hook forward priority filter; policy accept; }}\n\
         flush chain ip {TABLE} {nat}\n\
         flush chain ip {TABLE} {fwd}\n\
         add rule ip {TABLE} {nat} ip saddr {subnet} oifname != \"{bridge}\" masquerade\n\
         add rule ip {TABLE} {fwd} iifname \"{bridge}\" accept\n\
         add rule ip {TABLE} {fwd} oifname \"{bridge}\" ct state established,related accept\n\
         add rule ip {TABLE} {fwd} oifname \"{bridge}\" drop\n"
    )
}

/// A base chain of another table, hooked on forward, whose policy drops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppingChain {
    pub family: String,
    pub table: String,
    pub name: String,
}

impl std::fmt::Display for DroppingChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.family, self.table, self.name)
    }
}

/// The forward chains of other tables that drop by policy, from `nft -j list chains`.
/// Only ip and inet families see routed IPv4 (and, with br_netfilter, bridged IPv4) traffic.
pub fn dropping_forward_chains(list_chains_json: &str) -> Vec<DroppingChain> {
    let Ok(v) = serde_json::from_str::<Value>(list_chains_json) else {
        return Vec::new();
    };
    let items = v["nftables"].as_array().cloned().unwrap_or_default();
    items
        .iter()
        .filter_map(|item| item.get("chain"))
        .filter(|c| c["hook"] == "forward" && c["policy"] == "drop")
        .filter(|c| matches!(c["family"].as_str(), Some("ip" | "inet")))
        .filter(|c| !(c["family"] == "ip" && c["table"] == TABLE))
        .filter_map(|c| {
            Some(DroppingChain {
                family: c["family"].as_str()?.to_string(),
                table: c["table"].as_str()?.to_string(),
                name: c["name"].as_str()?.to_string(),
            })
        })
        .collect()
}

/// Handles of the rules carrying `comment` in one chain, from `nft -j list chain ...`.
pub fn rules_with_comment(list_chain_json: &str, comment: &str) -> Vec<u64> {
    let Ok(v) = serde_json::from_str::<Value>(list_chain_json) else {
        return Vec::new();
    };
    v["nftables"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.get("rule"))
                .filter(|r| r["comment"] == comment)
                .filter_map(|r| r["handle"].as_u64())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a name can be written bare in an nft script (nft's own identifier syntax).
fn plain_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == '.')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'))
}

/// The script that puts our two accept rules at the top of a foreign chain, replacing any of
/// ours already there (`stale` handles). None when the names cannot be written safely.
pub fn accept_in_foreign_chain(
    chain: &DroppingChain,
    bridge: &str,
    stale: &[u64],
) -> Option<String> {
    if ![&chain.family, &chain.table, &chain.name]
        .iter()
        .all(|s| plain_identifier(s))
    {
        return None;
    }
    let DroppingChain {
        family,
        table,
        name,
    } = chain;
    let c = comment(bridge);
    let mut s = String::new();
    for h in stale {
        s.push_str(&format!("delete rule {family} {table} {name} handle {h}\n"));
    }
    s.push_str(&format!(
        "insert rule {family} {table} {name} oifname \"{bridge}\" ct state established,related \
         accept comment \"{c}\"\n\
         insert rule {family} {table} {name} iifname \"{bridge}\" accept comment \"{c}\"\n"
    ));
    Some(s)
}

/// Runs `nft` with `args`, feeding `stdin`; returns stdout.
pub async fn nft(args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut cmd = tokio::process::Command::new("nft");
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            NetworkError::Firewall(
                "nft is not installed; install Debian's nftables package (deploy/install-deps.sh \
                 does)"
                    .into(),
            )
        } else {
            NetworkError::Firewall(format!("cannot run nft: {e}"))
        }
    })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .await
            .map_err(|e| NetworkError::Firewall(format!("cannot feed nft: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| NetworkError::Firewall(format!("nft did not finish: {e}")))?;
    if !out.status.success() {
        return Err(NetworkError::Firewall(format!(
            "`nft {}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            stdin.map(|s| format!("\nscript:\n{s}")).unwrap_or_default()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command for the legacy iptables backend; Ok(None) when the binary is absent.
async fn run_quiet(program: &str, args: &[&str]) -> Result<Option<std::process::Output>> {
    match tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
    {
        Ok(out) => Ok(Some(out)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(NetworkError::Firewall(format!("cannot run {program}: {e}"))),
    }
}

/// What [`install`] did beyond our own table, for the log.
#[derive(Debug, Default)]
pub struct Report {
    /// Foreign nftables chains we added accept rules to.
    pub opened: Vec<String>,
    /// Foreign chains that drop and that we could not open (names we cannot write).
    pub blocked: Vec<String>,
}

/// Installs our chains and opens foreign forward chains that would drop bridge traffic.
pub async fn install(bridge: &str, subnet: Subnet) -> Result<Report> {
    nft(&["-f", "-"], Some(&bridge_rules(bridge, subnet))).await?;
    let mut report = Report::default();
    let chains = nft(&["-j", "list", "chains"], None).await?;
    for chain in dropping_forward_chains(&chains) {
        let listing = nft(
            &[
                "-j",
                "list",
                "chain",
                &chain.family,
                &chain.table,
                &chain.name,
            ],
            None,
        )
        .await?;
        let ours = rules_with_comment(&listing, &comment(bridge));
        if ours.len() == 2 {
            continue;
        }
        match accept_in_foreign_chain(&chain, bridge, &ours) {
            Some(script) => match nft(&["-f", "-"], Some(&script)).await {
                Ok(_) => report.opened.push(chain.to_string()),
                // A table owned by another daemon (nft "owner" flag) refuses foreign rules.
                Err(e) => report.blocked.push(format!("{chain} ({e})")),
            },
            None => report.blocked.push(chain.to_string()),
        }
    }
    legacy_iptables(bridge, &mut report).await?;
    Ok(report)
}

/// The legacy iptables backend is invisible to nft but drops all the same.
async fn legacy_iptables(bridge: &str, report: &mut Report) -> Result<()> {
    // `iptables` itself is the legacy backend on some systems; iptables-legacy on others.
    let mut program = None;
    for candidate in ["iptables-legacy", "iptables"] {
        if let Some(out) = run_quiet(candidate, &["-V"]).await?
            && String::from_utf8_lossy(&out.stdout).contains("legacy")
        {
            program = Some(candidate);
            break;
        }
    }
    let Some(program) = program else {
        return Ok(());
    };
    let Some(policy) = run_quiet(program, &["-S", "FORWARD"]).await? else {
        return Ok(());
    };
    if !String::from_utf8_lossy(&policy.stdout).contains("-P FORWARD DROP") {
        return Ok(());
    }
    let rules: [&[&str]; 2] = [
        &["FORWARD", "-i", bridge, "-j", "ACCEPT"],
        &[
            "FORWARD",
            "-o",
            bridge,
            "-m",
            "conntrack",
            "--ctstate",
            "RELATED,ESTABLISHED",
            "-j",
            "ACCEPT",
        ],
    ];
    for rule in rules {
        let check: Vec<&str> = std::iter::once("-C").chain(rule.iter().copied()).collect();
        let present = run_quiet(program, &check)
            .await?
            .is_some_and(|o| o.status.success());
        if present {
            continue;
        }
        let insert: Vec<&str> = std::iter::once("-I").chain(rule.iter().copied()).collect();
        match run_quiet(program, &insert).await? {
            Some(o) if o.status.success() => {}
            Some(o) => {
                return Err(NetworkError::Firewall(format!(
                    "`{program} {}` failed: {}",
                    insert.join(" "),
                    String::from_utf8_lossy(&o.stderr).trim()
                )));
            }
            None => {}
        }
    }
    report.opened.push(format!("{program} FORWARD"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_rules_masquerade_the_subnet_and_isolate_the_bridge() {
        let s = bridge_rules("shoal0", "172.29.0.0/16".parse().unwrap());
        assert!(s.contains("add table ip shoal\n"));
        assert!(s.contains(
            "add rule ip shoal nat_shoal0 ip saddr 172.29.0.0/16 oifname != \"shoal0\" masquerade"
        ));
        assert!(s.contains("flush chain ip shoal fwd_shoal0"));
        // The drop comes last, after both accepts.
        let drop = s.find("oifname \"shoal0\" drop").unwrap();
        assert!(s.find("iifname \"shoal0\" accept").unwrap() < drop);
        assert!(s.find("established,related accept").unwrap() < drop);
        // Odd bridge names still make valid chain names.
        assert!(bridge_rules("br-x.1", "10.9.0.0/16".parse().unwrap()).contains("fwd_br_x_1"));
    }

    const CHAINS: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
        {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
        {"chain": {"family": "inet", "table": "firewalld", "name": "filter_FORWARD", "handle": 2, "type": "filter", "hook": "forward", "prio": 10, "policy": "accept"}},
        {"chain": {"family": "inet", "table": "my fw", "name": "fwd", "handle": 3, "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
        {"chain": {"family": "ip6", "table": "filter", "name": "FORWARD", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
        {"chain": {"family": "ip", "table": "shoal", "name": "fwd_shoal0", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
        {"chain": {"family": "ip", "table": "filter", "name": "DOCKER", "handle": 4}}]}"#;

    #[test]
    fn finds_foreign_forward_chains_that_drop() {
        let found = dropping_forward_chains(CHAINS);
        let names: Vec<String> = found.iter().map(|c| c.to_string()).collect();
        assert_eq!(names, vec!["ip filter FORWARD", "inet my fw fwd"]);
        assert!(dropping_forward_chains("not json").is_empty());
    }

    #[test]
    fn opens_a_foreign_chain_once_replacing_stale_rules() {
        let docker = &dropping_forward_chains(CHAINS)[0];
        let script = accept_in_foreign_chain(docker, "shoal0", &[7]).unwrap();
        assert_eq!(
            script,
            "delete rule ip filter FORWARD handle 7\n\
             insert rule ip filter FORWARD oifname \"shoal0\" ct state established,related \
             accept comment \"shoal:shoal0\"\n\
             insert rule ip filter FORWARD iifname \"shoal0\" accept comment \"shoal:shoal0\"\n"
        );
        // A table name nft cannot take bare is left alone (and reported).
        assert!(
            accept_in_foreign_chain(&dropping_forward_chains(CHAINS)[1], "shoal0", &[]).is_none()
        );
    }

    #[test]
    fn our_rules_are_recognised_by_comment() {
        let listing = r#"{"nftables": [{"metainfo": {}},
            {"rule": {"family": "ip", "table": "filter", "chain": "FORWARD", "handle": 2, "comment": "shoal:shoal0", "expr": []}},
            {"rule": {"family": "ip", "table": "filter", "chain": "FORWARD", "handle": 3, "expr": []}},
            {"rule": {"family": "ip", "table": "filter", "chain": "FORWARD", "handle": 5, "comment": "shoal:shoal0", "expr": []}},
            {"rule": {"family": "ip", "table": "filter", "chain": "FORWARD", "handle": 6, "comment": "shoal:other", "expr": []}}]}"#;
        assert_eq!(rules_with_comment(listing, "shoal:shoal0"), vec![2, 5]);
    }
}
