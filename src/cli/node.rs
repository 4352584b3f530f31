//! `shoal node ...`: the cluster's nodes as `docker node` shows and changes them.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use shoal_proto::control_client::ControlClient;
use shoal_proto::daemon_client::DaemonClient;
use shoal_proto::{
    GetNodeRequest, InfoRequest, ListNodesRequest, Node, NodeAvailability, NodeRole,
    RemoveNodeRequest, UpdateNodeRequest, manager_status, node_status,
};
use tonic::transport::Channel;

use super::Host;
use super::client::connect;
use super::output::{Format, print_json, table};

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List the cluster's nodes.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show nodes in detail (`self` means this node).
    Inspect(InspectArgs),
    /// Make workers managers.
    Promote(NodesArgs),
    /// Make managers workers.
    Demote(NodesArgs),
    /// Change a node's availability or labels.
    Update(UpdateArgs),
    /// Remove nodes from the cluster.
    #[command(alias = "remove")]
    Rm(RmArgs),
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only IDs.
    #[arg(short, long)]
    quiet: bool,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Human-readable summary instead of JSON.
    #[arg(long)]
    pretty: bool,
    #[arg(required = true)]
    nodes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct NodesArgs {
    #[arg(required = true)]
    nodes: Vec<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Availability {
    Active,
    Pause,
    Drain,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[arg(long, value_enum)]
    availability: Option<Availability>,
    /// Add or change a label (key=value).
    #[arg(long = "label-add", value_name = "KEY=VALUE")]
    label_add: Vec<String>,
    /// Remove a label.
    #[arg(long = "label-rm", value_name = "KEY")]
    label_rm: Vec<String>,
    node: String,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Remove a node that is not down.
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    nodes: Vec<String>,
}

pub async fn run(host: &Host, cmd: NodeCommand) -> Result<()> {
    let channel = connect(host).await?;
    let mut control = ControlClient::new(channel.clone());
    match cmd {
        NodeCommand::Ls(a) => {
            let nodes = control
                .list_nodes(ListNodesRequest::default())
                .await?
                .into_inner()
                .nodes;
            if a.quiet {
                nodes.iter().for_each(|n| println!("{}", n.id));
            } else if a.format == Format::Json {
                print_json(&nodes)?;
            } else {
                let me = self_id(&channel, host).await;
                print!("{}", render_ls(&nodes, me.as_deref()));
            }
        }
        NodeCommand::Inspect(a) => {
            let mut found = Vec::new();
            for reference in &a.nodes {
                let id = resolve_self(&channel, host, reference).await?;
                let node = control
                    .get_node(GetNodeRequest { node_id: id })
                    .await?
                    .into_inner()
                    .node
                    .context("the manager returned no node")?;
                found.push(node);
            }
            if a.pretty {
                for n in &found {
                    print!("{}", render_pretty(n));
                }
            } else {
                print_json(&found)?;
            }
        }
        NodeCommand::Promote(a) => {
            for reference in &a.nodes {
                let id =
                    set_role(&mut control, &channel, host, reference, NodeRole::Manager).await?;
                println!("Node {id} promoted to a manager in the cluster.");
            }
        }
        NodeCommand::Demote(a) => {
            for reference in &a.nodes {
                let id =
                    set_role(&mut control, &channel, host, reference, NodeRole::Worker).await?;
                println!("Manager {id} demoted in the cluster.");
            }
        }
        NodeCommand::Update(a) => {
            let id = resolve_self(&channel, host, &a.node).await?;
            let node = get(&mut control, &id).await?;
            let mut spec = node.spec.clone().unwrap_or_default();
            if let Some(av) = a.availability {
                spec.availability = match av {
                    Availability::Active => NodeAvailability::Active,
                    Availability::Pause => NodeAvailability::Pause,
                    Availability::Drain => NodeAvailability::Drain,
                } as i32;
            }
            let labels = &mut spec.annotations.get_or_insert_with(Default::default).labels;
            for kv in &a.label_add {
                let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
                if k.is_empty() {
                    anyhow::bail!("--label-add {kv:?}: the key is empty; use KEY=VALUE");
                }
                labels.insert(k.to_string(), v.to_string());
            }
            for k in &a.label_rm {
                if labels.remove(k).is_none() {
                    anyhow::bail!("--label-rm {k:?}: node {} has no such label", node.id);
                }
            }
            control
                .update_node(UpdateNodeRequest {
                    node_id: node.id.clone(),
                    node_version: node.meta.map(|m| m.version).unwrap_or(0),
                    spec: Some(spec),
                })
                .await?;
            println!("{}", node.id);
        }
        NodeCommand::Rm(a) => {
            for reference in &a.nodes {
                let id = resolve_self(&channel, host, reference).await?;
                control
                    .remove_node(RemoveNodeRequest {
                        node_id: id.clone(),
                        force: a.force,
                    })
                    .await?;
                println!("{id}");
            }
        }
    }
    Ok(())
}

async fn get(control: &mut ControlClient<Channel>, id: &str) -> Result<Node> {
    control
        .get_node(GetNodeRequest {
            node_id: id.to_string(),
        })
        .await?
        .into_inner()
        .node
        .context("the manager returned no node")
}

async fn set_role(
    control: &mut ControlClient<Channel>,
    channel: &Channel,
    host: &Host,
    reference: &str,
    role: NodeRole,
) -> Result<String> {
    let id = resolve_self(channel, host, reference).await?;
    let node = get(control, &id).await?;
    let mut spec = node.spec.clone().unwrap_or_default();
    spec.desired_role = role as i32;
    control
        .update_node(UpdateNodeRequest {
            node_id: node.id.clone(),
            node_version: node.meta.map(|m| m.version).unwrap_or(0),
            spec: Some(spec),
        })
        .await?;
    Ok(node.id)
}

/// This node's ID, when the CLI talks to a local daemon.
async fn self_id(channel: &Channel, host: &Host) -> Option<String> {
    if !matches!(host, Host::Unix(_)) {
        return None;
    }
    DaemonClient::new(channel.clone())
        .info(InfoRequest {})
        .await
        .ok()
        .map(|r| r.into_inner().node_id)
}

/// `self` names the local node, as in Docker.
async fn resolve_self(channel: &Channel, host: &Host, reference: &str) -> Result<String> {
    if reference != "self" {
        return Ok(reference.to_string());
    }
    self_id(channel, host)
        .await
        .context("`self` needs the local daemon's socket (-H unix://...)")
}

fn status_word(n: &Node) -> &'static str {
    match n
        .status
        .as_ref()
        .and_then(|s| node_status::State::try_from(s.state).ok())
        .unwrap_or_default()
    {
        node_status::State::Ready => "Ready",
        node_status::State::Down => "Down",
        node_status::State::Disconnected => "Disconnected",
        node_status::State::Unknown => "Unknown",
    }
}

fn availability_word(n: &Node) -> &'static str {
    match n
        .spec
        .as_ref()
        .and_then(|s| NodeAvailability::try_from(s.availability).ok())
        .unwrap_or_default()
    {
        NodeAvailability::Active => "Active",
        NodeAvailability::Pause => "Pause",
        NodeAvailability::Drain => "Drain",
    }
}

fn manager_word(n: &Node) -> &'static str {
    match &n.manager_status {
        None => "",
        Some(m) if m.leader => "Leader",
        Some(m) => match manager_status::Reachability::try_from(m.reachability).unwrap_or_default()
        {
            manager_status::Reachability::Reachable => "Reachable",
            manager_status::Reachability::Unreachable => "Unreachable",
            manager_status::Reachability::Unknown => "Unknown",
        },
    }
}

fn hostname(n: &Node) -> &str {
    n.description
        .as_ref()
        .map(|d| d.hostname.as_str())
        .unwrap_or("")
}

/// `node ls` as Docker prints it, `*` marking the local node.
fn render_ls(nodes: &[Node], me: Option<&str>) -> String {
    let mut rows = Vec::new();
    for n in nodes {
        let id = if Some(n.id.as_str()) == me {
            format!("{} *", n.id)
        } else {
            n.id.clone()
        };
        rows.push(vec![
            id,
            hostname(n).to_string(),
            status_word(n).into(),
            availability_word(n).into(),
            manager_word(n).into(),
            n.description
                .as_ref()
                .and_then(|d| d.engine.as_ref())
                .map(|e| e.engine_version.clone())
                .unwrap_or_default(),
        ]);
    }
    table(
        &[
            "ID",
            "HOSTNAME",
            "STATUS",
            "AVAILABILITY",
            "MANAGER STATUS",
            "ENGINE VERSION",
        ],
        &rows,
    )
}

fn render_pretty(n: &Node) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "ID:                 {}", n.id);
    if let Some(labels) = n
        .spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map(|a| &a.labels)
    {
        if !labels.is_empty() {
            let _ = writeln!(out, "Labels:");
            for (k, v) in labels {
                let _ = writeln!(out, " - {k}={v}");
            }
        }
    }
    let _ = writeln!(out, "Hostname:           {}", hostname(n));
    let _ = writeln!(out, "Status:");
    let _ = writeln!(out, " State:              {}", status_word(n));
    if let Some(s) = &n.status {
        if !s.message.is_empty() {
            let _ = writeln!(out, " Message:            {}", s.message);
        }
        let _ = writeln!(out, " Availability:       {}", availability_word(n));
        let _ = writeln!(out, " Address:            {}", s.addr);
    }
    if let Some(m) = &n.manager_status {
        let _ = writeln!(out, "Manager Status:");
        let _ = writeln!(out, " Address:            {}", m.addr);
        let _ = writeln!(out, " Raft Status:        {}", manager_word(n));
        let _ = writeln!(
            out,
            " Leader:             {}",
            if m.leader { "Yes" } else { "No" }
        );
    }
    if let Some(d) = &n.description {
        let _ = writeln!(out, "Platform:");
        if let Some(p) = &d.platform {
            let _ = writeln!(out, " Operating System:   {}", p.os);
            let _ = writeln!(out, " Architecture:       {}", p.architecture);
        }
        if let Some(r) = &d.resources {
            let _ = writeln!(out, "Resources:");
            let _ = writeln!(out, " CPUs:               {}", r.nano_cpus / 1_000_000_000);
            let _ = writeln!(
                out,
                " Memory:             {}",
                super::output::human_bytes(r.memory_bytes)
            );
        }
        if let Some(e) = &d.engine {
            let _ = writeln!(out, "Engine Version:     {}", e.engine_version);
        }
    }
    let role = match NodeRole::try_from(n.role).unwrap_or_default() {
        NodeRole::Manager => "manager",
        NodeRole::Worker => "worker",
    };
    let _ = writeln!(out, "Role:               {role}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{ManagerStatus, NodeDescription, NodeSpec, NodeStatus};

    #[test]
    fn ls_shows_docker_columns_and_marks_self() {
        let nodes = vec![
            Node {
                id: "aaa".into(),
                spec: Some(NodeSpec::default()),
                description: Some(NodeDescription {
                    hostname: "m1".into(),
                    ..Default::default()
                }),
                status: Some(NodeStatus {
                    state: node_status::State::Ready as i32,
                    ..Default::default()
                }),
                manager_status: Some(ManagerStatus {
                    leader: true,
                    ..Default::default()
                }),
                ..Default::default()
            },
            Node {
                id: "bbb".into(),
                spec: Some(NodeSpec {
                    availability: NodeAvailability::Drain as i32,
                    ..Default::default()
                }),
                status: Some(NodeStatus {
                    state: node_status::State::Down as i32,
                    ..Default::default()
                }),
                ..Default::default()
            },
        ];
        let text = render_ls(&nodes, Some("aaa"));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ID") && lines[0].contains("MANAGER STATUS"));
        assert!(
            lines[1].starts_with("aaa *")
                && lines[1].contains("Ready")
                && lines[1].contains("Leader")
        );
        assert!(lines[2].contains("Down") && lines[2].contains("Drain"));
    }
}
