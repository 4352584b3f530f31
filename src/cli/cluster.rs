//! `shoal cluster ...`: create, join and leave a cluster, its join tokens, settings and CA —
//! Docker's `swarm` commands under the name this project gives its clusters.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use shoal_proto::control_client::ControlClient;
use shoal_proto::daemon_client::DaemonClient;
use shoal_proto::node_ca_client::NodeCaClient;
use shoal_proto::{
    ClusterInfoRequest, ClusterInitRequest, ClusterJoinRequest, ClusterLeaveRequest,
    GetClusterRequest, IssueClientCertificateRequest, NodeRole, UpdateClusterRequest,
};

use super::Host;
use super::client::connect;
use super::units::parse_duration;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Make this node the first manager of a new cluster.
    Init(InitArgs),
    /// Join a cluster as a worker or a manager (the token decides).
    Join(JoinArgs),
    /// Show (and optionally rotate) the join token for workers or managers.
    JoinToken(JoinTokenArgs),
    /// Leave the cluster.
    Leave(LeaveArgs),
    /// Show the cluster this node belongs to.
    Info,
    /// Change cluster settings.
    Update(UpdateArgs),
    /// The cluster's certificate authority.
    #[command(subcommand)]
    Ca(CaCommand),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Address other nodes use to reach this one: IP[:PORT] or an interface name.
    #[arg(long)]
    advertise_addr: Option<String>,
    /// Address to listen on for cluster traffic: IP[:PORT] or an interface name (default port 2377).
    #[arg(long)]
    listen_addr: Option<String>,
    /// Lifetime of node certificates (default 2160h = 90 days).
    #[arg(long, value_parser = |s: &str| parse_duration("--cert-expiry", s))]
    cert_expiry: Option<Duration>,
    /// How often nodes send heartbeats (default 5s); a node is down after three missed ones.
    #[arg(long, value_parser = |s: &str| parse_duration("--dispatcher-heartbeat", s))]
    dispatcher_heartbeat: Option<Duration>,
    /// Recover a manager that lost its quorum: keep the state, make it the only manager.
    #[arg(long)]
    force_new_cluster: bool,
}

#[derive(Debug, Args)]
pub struct JoinArgs {
    /// Join token from `shoal cluster join-token worker|manager` on a manager.
    #[arg(long)]
    token: String,
    /// A manager's address, HOST[:PORT] (default port 2377).
    remote: String,
    #[arg(long)]
    advertise_addr: Option<String>,
    #[arg(long)]
    listen_addr: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TokenRole {
    Worker,
    Manager,
}

#[derive(Debug, Args)]
pub struct JoinTokenArgs {
    role: TokenRole,
    /// Replace the token: nodes already joined are unaffected, new joins need the new one.
    #[arg(long)]
    rotate: bool,
    /// Print only the token.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Debug, Args)]
pub struct LeaveArgs {
    /// Leave even if this is a manager whose leaving breaks the quorum (or the last manager).
    #[arg(short, long)]
    force: bool,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[arg(long, value_parser = |s: &str| parse_duration("--cert-expiry", s))]
    cert_expiry: Option<Duration>,
    #[arg(long, value_parser = |s: &str| parse_duration("--dispatcher-heartbeat", s))]
    dispatcher_heartbeat: Option<Duration>,
    /// Dead tasks kept per slot for `service ps` (default 5).
    #[arg(long)]
    task_history_limit: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Issue a client certificate for a remote CLI (`shoal -H tcp://MANAGER:2377`).
    IssueClient(IssueClientArgs),
}

#[derive(Debug, Args)]
pub struct IssueClientArgs {
    /// Directory to write ca.pem, cert.pem and key.pem into.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Name recorded in the certificate.
    #[arg(long)]
    name: Option<String>,
    /// Lifetime (default: the cluster's node certificate lifetime).
    #[arg(long, value_parser = |s: &str| parse_duration("--expiry", s))]
    expiry: Option<Duration>,
}

pub async fn run(host: &Host, cmd: ClusterCommand) -> Result<()> {
    let channel = connect(host).await?;
    let mut daemon = DaemonClient::new(channel.clone());
    let mut control = ControlClient::new(channel.clone());
    match cmd {
        ClusterCommand::Init(a) => {
            let resp = daemon
                .cluster_init(ClusterInitRequest {
                    listen_addr: a.listen_addr.unwrap_or_default(),
                    advertise_addr: a.advertise_addr.unwrap_or_default(),
                    force_new_cluster: a.force_new_cluster,
                    cert_expiry: a.cert_expiry.map(Into::into),
                    dispatcher_heartbeat: a.dispatcher_heartbeat.map(Into::into),
                })
                .await?
                .into_inner();
            println!(
                "Cluster initialized: current node ({}) is now a manager.\n",
                resp.node_id
            );
            println!("To add a worker to this cluster, run the following command:\n");
            println!("    {}\n", resp.worker_join_command);
            println!(
                "To add a manager to this cluster, run 'shoal cluster join-token manager' and \
                 follow the instructions."
            );
        }
        ClusterCommand::Join(a) => {
            let resp = daemon
                .cluster_join(ClusterJoinRequest {
                    token: a.token,
                    remote_addr: a.remote,
                    listen_addr: a.listen_addr.unwrap_or_default(),
                    advertise_addr: a.advertise_addr.unwrap_or_default(),
                })
                .await?
                .into_inner();
            let role = match NodeRole::try_from(resp.role).unwrap_or_default() {
                NodeRole::Manager => "manager",
                NodeRole::Worker => "worker",
            };
            println!("This node joined a cluster as a {role}.");
        }
        ClusterCommand::JoinToken(a) => {
            let mut cluster = control
                .get_cluster(GetClusterRequest {})
                .await?
                .into_inner()
                .cluster
                .context("the manager returned no cluster")?;
            if a.rotate {
                let version = cluster.meta.as_ref().map(|m| m.version).unwrap_or(0);
                cluster = control
                    .update_cluster(UpdateClusterRequest {
                        cluster_version: version,
                        spec: None,
                        rotate_worker_token: matches!(a.role, TokenRole::Worker),
                        rotate_manager_token: matches!(a.role, TokenRole::Manager),
                    })
                    .await?
                    .into_inner()
                    .cluster
                    .context("the manager returned no cluster")?;
            }
            let tokens = cluster
                .root_ca
                .and_then(|r| r.join_tokens)
                .context("the cluster has no join tokens")?;
            let (name, token) = match a.role {
                TokenRole::Worker => ("worker", tokens.worker),
                TokenRole::Manager => ("manager", tokens.manager),
            };
            if a.quiet {
                println!("{token}");
                return Ok(());
            }
            if a.rotate {
                println!("Successfully rotated {name} join token.\n");
            }
            let info = daemon
                .cluster_info(ClusterInfoRequest {})
                .await?
                .into_inner();
            println!("To add a {name} to this cluster, run the following command:\n");
            println!(
                "    shoal cluster join --token {token} {}\n",
                info.advertise_addr
            );
        }
        ClusterCommand::Leave(a) => {
            daemon
                .cluster_leave(ClusterLeaveRequest { force: a.force })
                .await?;
            println!("Node left the cluster.");
        }
        ClusterCommand::Info => print_info(&mut daemon).await?,
        ClusterCommand::Update(a) => {
            let cluster = control
                .get_cluster(GetClusterRequest {})
                .await?
                .into_inner()
                .cluster
                .context("the manager returned no cluster")?;
            let mut spec = cluster.spec.unwrap_or_default();
            if let Some(d) = a.cert_expiry {
                spec.ca
                    .get_or_insert_with(Default::default)
                    .node_cert_expiry = Some(d.into());
            }
            if let Some(d) = a.dispatcher_heartbeat {
                spec.dispatcher
                    .get_or_insert_with(Default::default)
                    .heartbeat_period = Some(d.into());
            }
            if let Some(n) = a.task_history_limit {
                spec.orchestration
                    .get_or_insert_with(Default::default)
                    .task_history_retention_limit = n;
            }
            control
                .update_cluster(UpdateClusterRequest {
                    cluster_version: cluster.meta.map(|m| m.version).unwrap_or(0),
                    spec: Some(spec),
                    rotate_worker_token: false,
                    rotate_manager_token: false,
                })
                .await?;
            println!("Cluster updated.");
        }
        ClusterCommand::Ca(CaCommand::IssueClient(a)) => issue_client(channel, a).await?,
    }
    Ok(())
}

async fn print_info(daemon: &mut DaemonClient<tonic::transport::Channel>) -> Result<()> {
    let info = daemon
        .cluster_info(ClusterInfoRequest {})
        .await?
        .into_inner();
    let role = match NodeRole::try_from(info.role).unwrap_or_default() {
        NodeRole::Manager => "manager",
        NodeRole::Worker => "worker",
    };
    println!("Cluster ID:       {}", info.cluster_id);
    println!("Node ID:          {}", info.node_id);
    println!("Role:             {role}");
    println!("Advertise Addr:   {}", info.advertise_addr);
    if role == "manager" {
        println!("Listen Addr:      {}", info.listen_addr);
    }
    if let Some(t) = info.cert_not_after {
        let until = t.to_system_time();
        let left = until
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        println!(
            "Certificate:      expires in {} days",
            left.as_secs() / 86400
        );
    }
    if info.session_manager.is_empty() {
        println!("Session:          none ({})", info.session_error);
    } else {
        println!("Session:          with {}", info.session_manager);
    }
    println!("Managers:");
    let mut rows = Vec::new();
    for m in &info.managers {
        rows.push(vec![
            format!("  {}", m.node_id),
            m.addr.clone(),
            m.raft_id.to_string(),
            if m.raft_id == info.leader_raft_id && m.raft_id != 0 {
                "yes".into()
            } else {
                "".into()
            },
        ]);
    }
    super::output::print_table(&["  NODE ID", "ADDRESS", "RAFT ID", "LEADER"], &rows);
    Ok(())
}

async fn issue_client(channel: tonic::transport::Channel, a: IssueClientArgs) -> Result<()> {
    let key = shoal_manager::ca::NodeKey::generate()?;
    let resp = NodeCaClient::new(channel)
        .issue_client_certificate(IssueClientCertificateRequest {
            csr_pem: key.csr_pem()?.into_bytes(),
            name: a.name.unwrap_or_default(),
            expiry: a.expiry.map(Into::into),
        })
        .await?
        .into_inner();
    if a.out.exists() && !a.out.is_dir() {
        bail!("--out {} is not a directory", a.out.display());
    }
    super::client::write_client_certs(
        &a.out,
        &resp.root_ca_pem,
        &resp.certificate_pem,
        key.to_pem().as_bytes(),
    )?;
    println!(
        "Client certificate written to {} (ca.pem, cert.pem, key.pem).\nUse it with: shoal \
         --tls-dir {} -H tcp://MANAGER:2377 node ls",
        a.out.display(),
        a.out.display()
    );
    Ok(())
}
