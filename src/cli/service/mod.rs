//! `shoal service ...`: declare services and watch them run, in the shape of `docker service`
//! (flags, defaults, table columns), talking to a manager's Control API.

mod logs;
mod progress;
pub mod spec;

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use shoal_proto::control_client::ControlClient;
use shoal_proto::{
    CreateServiceRequest, GetServiceRequest, ListNodesRequest, ListServicesRequest,
    ListTasksRequest, RemoveServiceRequest, Service, Task, TaskState, UpdateServiceRequest,
    list_tasks_request, service_spec,
};
use tonic::transport::Channel;

use super::Host;
use super::client::connect;
use super::output::{Format, print_json, print_table, time_ago};

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Create a service.
    Create(Box<spec::CreateArgs>),
    /// List services.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// List the tasks of services.
    Ps(PsArgs),
    /// Show services in detail.
    Inspect(InspectArgs),
    /// Change the number of replicas: NAME=N...
    Scale(ScaleArgs),
    /// Remove services.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Show the logs of a service or task, from every node that ran it.
    Logs(logs::LogsArgs),
}

#[derive(Debug, Args)]
pub struct LsArgs {
    #[arg(short, long)]
    quiet: bool,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show full IDs and errors.
    #[arg(long)]
    no_trunc: bool,
    /// Only task IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Filter: desired-state=running|shutdown|accepted.
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filters: Vec<String>,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    #[arg(required = true)]
    services: Vec<String>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[arg(long)]
    pretty: bool,
    #[arg(required = true)]
    services: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// Return at once instead of waiting for the tasks.
    #[arg(short, long)]
    detach: bool,
    #[arg(required = true, value_name = "SERVICE=REPLICAS")]
    scales: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    #[arg(required = true)]
    services: Vec<String>,
}

/// The first 12 characters of an ID, as Docker shows IDs in tables.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

pub async fn run(host: &Host, cmd: ServiceCommand) -> Result<()> {
    let channel = connect(host).await?;
    let mut control = ControlClient::new(channel.clone());
    match cmd {
        ServiceCommand::Logs(a) => logs::run(channel, a).await?,
        ServiceCommand::Create(a) => {
            let spec = a.to_spec()?;
            let service = control
                .create_service(CreateServiceRequest { spec: Some(spec) })
                .await?
                .into_inner()
                .service
                .context("the manager returned no service")?;
            println!("{}", service.id);
            if !a.detach {
                progress::converge(&mut control, &service.id).await?;
            }
        }
        ServiceCommand::Ls(a) => ls(&mut control, a).await?,
        ServiceCommand::Ps(a) => ps(&mut control, a).await?,
        ServiceCommand::Inspect(a) => {
            let mut found = Vec::new();
            for s in &a.services {
                found.push(get(&mut control, s).await?);
            }
            if a.pretty {
                for s in &found {
                    print!("{}", pretty(s));
                }
            } else {
                print_json(&found)?;
            }
        }
        ServiceCommand::Scale(a) => {
            let mut scaled = Vec::new();
            for pair in &a.scales {
                let (name, n) = pair
                    .split_once('=')
                    .with_context(|| format!("{pair:?}: expected SERVICE=REPLICAS, e.g. web=5"))?;
                let replicas: u64 = n.parse().map_err(|_| {
                    anyhow::anyhow!("{pair:?}: the replica count must be a whole number >= 0")
                })?;
                let service = get(&mut control, name).await?;
                let mut spec = service.spec.clone().unwrap_or_default();
                match spec.mode.as_mut() {
                    Some(service_spec::Mode::Replicated(r)) => r.replicas = replicas,
                    _ => bail!("{name}: scale can only be used with replicated services"),
                }
                control
                    .update_service(UpdateServiceRequest {
                        service_id: service.id.clone(),
                        service_version: service.meta.as_ref().map(|m| m.version).unwrap_or(0),
                        spec: Some(spec),
                        rollback: false,
                    })
                    .await?;
                println!("{name} scaled to {replicas}");
                scaled.push(service.id);
            }
            if !a.detach {
                for id in &scaled {
                    progress::converge(&mut control, id).await?;
                }
            }
        }
        ServiceCommand::Rm(a) => {
            for s in &a.services {
                let service = get(&mut control, s).await?;
                control
                    .remove_service(RemoveServiceRequest {
                        service_id: service.id.clone(),
                    })
                    .await?;
                println!("{s}");
            }
        }
    }
    Ok(())
}

/// A service by ID, unique ID prefix or name.
async fn get(control: &mut ControlClient<Channel>, reference: &str) -> Result<Service> {
    control
        .get_service(GetServiceRequest {
            service_id: reference.to_string(),
        })
        .await?
        .into_inner()
        .service
        .context("the manager returned no service")
}

fn service_name(s: &Service) -> &str {
    s.spec
        .as_ref()
        .and_then(|sp| sp.annotations.as_ref())
        .map(|a| a.name.as_str())
        .unwrap_or("")
}

fn image(s: &Service) -> &str {
    s.spec
        .as_ref()
        .and_then(|sp| sp.task.as_ref())
        .and_then(|t| t.container.as_ref())
        .map(|c| c.image.as_str())
        .unwrap_or("")
}

fn task_state(t: &Task) -> TaskState {
    TaskState::try_from(t.status.as_ref().map(|s| s.state).unwrap_or(0)).unwrap_or_default()
}

fn desired(t: &Task) -> TaskState {
    TaskState::try_from(t.desired_state).unwrap_or_default()
}

async fn all_tasks(
    control: &mut ControlClient<Channel>,
    service_ids: Vec<String>,
) -> Result<Vec<Task>> {
    Ok(control
        .list_tasks(ListTasksRequest {
            filters: Some(list_tasks_request::Filters {
                service_ids,
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .tasks)
}

async fn ls(control: &mut ControlClient<Channel>, a: LsArgs) -> Result<()> {
    let mut services = control
        .list_services(ListServicesRequest::default())
        .await?
        .into_inner()
        .services;
    services.sort_by(|x, y| service_name(x).cmp(service_name(y)));
    if a.quiet {
        services.iter().for_each(|s| println!("{}", s.id));
        return Ok(());
    }
    if a.format == Format::Json {
        return print_json(&services);
    }
    let tasks = all_tasks(control, Vec::new()).await?;
    let rows = services
        .iter()
        .map(|s| {
            let mine = tasks.iter().filter(|t| t.service_id == s.id);
            let running = mine
                .clone()
                .filter(|t| desired(t) == TaskState::Running && task_state(t) == TaskState::Running)
                .count();
            let (mode, wanted) = match s.spec.as_ref().and_then(|sp| sp.mode.as_ref()) {
                Some(service_spec::Mode::Replicated(r)) => ("replicated", r.replicas as usize),
                _ => (
                    "global",
                    mine.filter(|t| desired(t) == TaskState::Running).count(),
                ),
            };
            vec![
                short(&s.id).to_string(),
                service_name(s).to_string(),
                mode.to_string(),
                format!("{running}/{wanted}"),
                image(s).to_string(),
            ]
        })
        .collect::<Vec<_>>();
    print_table(&["ID", "NAME", "MODE", "REPLICAS", "IMAGE"], &rows);
    Ok(())
}

async fn ps(control: &mut ControlClient<Channel>, a: PsArgs) -> Result<()> {
    let mut desired_filter: Option<TaskState> = None;
    for f in &a.filters {
        match f.split_once('=') {
            Some(("desired-state", v)) => {
                desired_filter = Some(match v {
                    "running" => TaskState::Running,
                    "shutdown" => TaskState::Shutdown,
                    "accepted" => TaskState::Accepted,
                    _ => bail!("--filter {f:?}: desired-state is running, shutdown or accepted"),
                })
            }
            _ => bail!(
                "--filter {f:?}: the supported filter is desired-state=running|shutdown|accepted"
            ),
        }
    }
    let mut services = Vec::new();
    for s in &a.services {
        services.push(get(control, s).await?);
    }
    let hostnames: HashMap<String, String> = control
        .list_nodes(ListNodesRequest::default())
        .await?
        .into_inner()
        .nodes
        .into_iter()
        .map(|n| {
            let h = n.description.map(|d| d.hostname).unwrap_or_default();
            (n.id, h)
        })
        .collect();
    let mut tasks = all_tasks(control, services.iter().map(|s| s.id.clone()).collect()).await?;
    if let Some(want) = desired_filter {
        tasks.retain(|t| desired(t) == want);
    }
    if a.quiet {
        tasks.iter().for_each(|t| println!("{}", t.id));
        return Ok(());
    }
    if a.format == Format::Json {
        return print_json(&tasks);
    }
    let names: HashMap<&str, &str> = services
        .iter()
        .map(|s| (s.id.as_str(), service_name(s)))
        .collect();
    print_table(
        &[
            "ID",
            "NAME",
            "IMAGE",
            "NODE",
            "DESIRED STATE",
            "CURRENT STATE",
            "ERROR",
        ],
        &ps_rows(&tasks, &names, &hostnames, a.no_trunc),
    );
    Ok(())
}

/// Rows of `service ps`: per slot (or node), the newest task first, older ones as " \_ name".
fn ps_rows(
    tasks: &[Task],
    names: &HashMap<&str, &str>,
    hostnames: &HashMap<String, String>,
    no_trunc: bool,
) -> Vec<Vec<String>> {
    let mut sorted: Vec<&Task> = tasks.iter().collect();
    let key = |t: &Task| {
        let group = if t.slot > 0 {
            format!("{:08}", t.slot)
        } else {
            t.node_id.clone()
        };
        (
            names.get(t.service_id.as_str()).copied().unwrap_or(""),
            group,
        )
    };
    let version = |t: &Task| t.meta.as_ref().map(|m| m.version).unwrap_or(0);
    sorted.sort_by(|x, y| key(x).cmp(&key(y)).then(version(y).cmp(&version(x))));
    let mut rows = Vec::new();
    let mut last_group = None;
    for t in sorted {
        let service = names.get(t.service_id.as_str()).copied().unwrap_or("");
        let label = if t.slot > 0 {
            format!("{service}.{}", t.slot)
        } else {
            format!(
                "{service}.{}",
                if no_trunc {
                    &t.node_id
                } else {
                    short(&t.node_id)
                }
            )
        };
        let group = key(t);
        let name = if last_group.as_ref() == Some(&group) {
            format!(" \\_ {label}")
        } else {
            label
        };
        last_group = Some(group);
        let status = t.status.clone().unwrap_or_default();
        let state = task_state(t).display_name();
        let current = match status.timestamp {
            Some(ts) => format!("{state} {}", time_ago(ts)),
            None => state.to_string(),
        };
        let mut error = if !status.err.is_empty() {
            status.err
        } else if task_state(t) == TaskState::Pending {
            status.message
        } else {
            String::new()
        };
        if !no_trunc && error.chars().count() > 40 {
            error = error.chars().take(39).collect::<String>() + "…";
        }
        if !error.is_empty() {
            error = format!("\"{error}\"");
        }
        rows.push(vec![
            if no_trunc {
                t.id.clone()
            } else {
                short(&t.id).to_string()
            },
            name,
            t.spec
                .as_ref()
                .and_then(|s| s.container.as_ref())
                .map(|c| c.image.clone())
                .unwrap_or_default(),
            hostnames.get(&t.node_id).cloned().unwrap_or_default(),
            desired(t).display_name().to_string(),
            current,
            error,
        ]);
    }
    rows
}

fn pretty(s: &Service) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let spec = s.spec.clone().unwrap_or_default();
    let _ = writeln!(out, "ID:             {}", s.id);
    let _ = writeln!(out, "Name:           {}", service_name(s));
    if let Some(a) = &spec.annotations {
        if !a.labels.is_empty() {
            let _ = writeln!(out, "Labels:");
            for (k, v) in &a.labels {
                let _ = writeln!(out, " {k}={v}");
            }
        }
    }
    match &spec.mode {
        Some(service_spec::Mode::Replicated(r)) => {
            let _ = writeln!(
                out,
                "Service Mode:   Replicated\n Replicas:      {}",
                r.replicas
            );
        }
        _ => {
            let _ = writeln!(out, "Service Mode:   Global");
        }
    }
    let task = spec.task.unwrap_or_default();
    if let Some(p) = &task.placement {
        if !p.constraints.is_empty() {
            let _ = writeln!(out, "Placement:\n Constraints:   {:?}", p.constraints);
        }
    }
    if let Some(r) = &task.restart {
        let cond =
            shoal_proto::restart_policy::Condition::try_from(r.condition).unwrap_or_default();
        let _ = writeln!(
            out,
            "RestartPolicy:\n Condition:     {}",
            cond.as_str_name()
                .trim_start_matches("CONDITION_")
                .to_lowercase()
                .replace('_', "-")
        );
        let _ = writeln!(
            out,
            " Delay:         {:?}",
            r.delay
                .map(|d| d.to_std())
                .unwrap_or(std::time::Duration::from_secs(5))
        );
        let _ = writeln!(out, " Max Attempts:  {}", r.max_attempts);
    }
    let c = task.container.unwrap_or_default();
    let _ = writeln!(out, "ContainerSpec:\n Image:         {}", c.image);
    if !c.args.is_empty() {
        let _ = writeln!(out, " Args:          {}", c.args.join(" "));
    }
    if !c.env.is_empty() {
        let _ = writeln!(out, " Env:           {}", c.env.join(" "));
    }
    if let Some(r) = &task.resources {
        let show = |label: &str, res: &Option<shoal_proto::Resources>, out: &mut String| {
            if let Some(x) = res {
                if x.nano_cpus > 0 || x.memory_bytes > 0 {
                    let _ = writeln!(out, "{label}:");
                    if x.nano_cpus > 0 {
                        let _ = writeln!(out, " CPU:           {}", x.nano_cpus as f64 / 1e9);
                    }
                    if x.memory_bytes > 0 {
                        let _ = writeln!(
                            out,
                            " Memory:        {}",
                            super::output::human_bytes(x.memory_bytes)
                        );
                    }
                }
            }
        };
        show("Resources Reservations", &r.reservations, &mut out);
        show("Resources Limits", &r.limits, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{Meta, TaskStatus};

    fn task(id: &str, slot: u64, v: u64, state: TaskState, desired: TaskState, err: &str) -> Task {
        Task {
            id: id.into(),
            service_id: "s".into(),
            slot,
            node_id: "n1".into(),
            meta: Some(Meta {
                version: v,
                ..Default::default()
            }),
            desired_state: desired as i32,
            status: Some(TaskStatus {
                state: state as i32,
                err: err.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn ps_groups_history_under_the_current_task() {
        let tasks = vec![
            task(
                "aaaaaaaaaaaaaaaaaaaa",
                1,
                3,
                TaskState::Failed,
                TaskState::Shutdown,
                "task: non-zero exit (1)",
            ),
            task(
                "bbbbbbbbbbbbbbbbbbbb",
                1,
                7,
                TaskState::Running,
                TaskState::Running,
                "",
            ),
            task(
                "cccccccccccccccccccc",
                2,
                5,
                TaskState::Running,
                TaskState::Running,
                "",
            ),
        ];
        let names = HashMap::from([("s", "web")]);
        let hosts = HashMap::from([("n1".to_string(), "node-1".to_string())]);
        let rows = ps_rows(&tasks, &names, &hosts, false);
        assert_eq!(rows[0][0], "bbbbbbbbbbbb");
        assert_eq!(rows[0][1], "web.1");
        assert_eq!(rows[1][1], " \\_ web.1");
        assert_eq!(rows[1][6], "\"task: non-zero exit (1)\"");
        assert_eq!(rows[2][1], "web.2");
        assert_eq!(rows[0][3], "node-1");
        assert_eq!(rows[0][4], "Running");
    }
}
