//! `shoal info`: what the daemon knows about its node, laid out like `docker info`.

use anyhow::Result;
use shoal_proto::daemon_client::DaemonClient;
use shoal_proto::{InfoRequest, InfoResponse, NodeRole, cluster_membership};

use super::Host;
use super::output::{Format, human_bytes};

#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

pub async fn run(host: &Host, args: InfoArgs) -> Result<()> {
    let channel = super::client::connect(host).await?;
    let info = DaemonClient::new(channel)
        .info(InfoRequest {})
        .await?
        .into_inner();
    match args.format {
        Format::Json => super::output::print_json(&info)?,
        Format::Table => print!("{}", render(&info)),
    }
    Ok(())
}

/// The human layout, as a string so it is unit-tested.
fn render(info: &InfoResponse) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let m = info.membership.clone().unwrap_or_default();
    let state = cluster_membership::State::try_from(m.state).unwrap_or_default();
    let _ = writeln!(out, "Node ID:          {}", info.node_id);
    match state {
        cluster_membership::State::Inactive => {
            let _ = writeln!(out, "Cluster:          inactive (run `shoal cluster init`)");
        }
        _ => {
            let role = match NodeRole::try_from(m.role).unwrap_or_default() {
                NodeRole::Manager if m.is_leader => "manager (leader)",
                NodeRole::Manager => "manager",
                NodeRole::Worker => "worker",
            };
            let _ = writeln!(
                out,
                "Cluster:          {}",
                state
                    .as_str_name()
                    .trim_start_matches("STATE_")
                    .to_lowercase()
            );
            let _ = writeln!(out, " Cluster ID:      {}", m.cluster_id);
            let _ = writeln!(out, " Role:            {role}");
            let _ = writeln!(out, " Managers:        {}", m.managers);
            let _ = writeln!(out, " Nodes:           {}", m.nodes);
            if !m.error.is_empty() {
                let _ = writeln!(out, " Error:           {}", m.error);
            }
        }
    }
    let _ = writeln!(out, "Server Version:   {}", info.version);
    let _ = writeln!(out, "Hostname:         {}", info.hostname);
    let _ = writeln!(out, "Operating System: {}", info.operating_system);
    let _ = writeln!(out, "Kernel Version:   {}", info.kernel_version);
    if let Some(p) = &info.platform {
        let _ = writeln!(out, "OS/Arch:          {}/{}", p.os, p.architecture);
    }
    let _ = writeln!(out, "CPUs:             {}", info.ncpu);
    let _ = writeln!(out, "Total Memory:     {}", human_bytes(info.memory_bytes));
    let _ = writeln!(out, "Cgroup Mode:      {}", info.cgroup_mode);
    let _ = writeln!(out, "State Dir:        {}", info.state_dir);
    let _ = writeln!(out, "Listen Address:   {}", info.listen_addr);
    if !info.advertise_addr.is_empty() {
        let _ = writeln!(out, "Advertise Addr:   {}", info.advertise_addr);
    }
    let engine = info.engine.clone().unwrap_or_default();
    if engine.runtime.is_empty() {
        let _ = writeln!(
            out,
            "Engine:           not available yet (the container engine is not built)"
        );
    } else {
        let _ = writeln!(out, "Engine:");
        let _ = writeln!(out, " Runtime:         {}", engine.runtime);
        let _ = writeln!(out, " Storage Driver:  {}", engine.storage_driver);
        let _ = writeln!(
            out,
            " Containers:      {} ({} running, {} stopped)",
            engine.containers_running + engine.containers_stopped,
            engine.containers_running,
            engine.containers_stopped
        );
        let _ = writeln!(out, " Images:          {}", engine.images);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_an_inactive_node() {
        let info = InfoResponse {
            node_id: "abc".into(),
            cgroup_mode: "hybrid".into(),
            memory_bytes: 2 * 1024 * 1024 * 1024,
            ..Default::default()
        };
        let text = render(&info);
        assert!(text.contains("Node ID:          abc"));
        assert!(text.contains("Cluster:          inactive"));
        assert!(text.contains("Cgroup Mode:      hybrid"));
        assert!(text.contains("Total Memory:     2GiB"));
    }
}
