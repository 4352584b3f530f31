//! `shoal container run|ps|exec|stop|kill|rm|logs|inspect|wait`: containers on this node, with
//! Docker's flags and table columns, for local debugging.
//!
//! `run` without -d is create + start + follow the logs + wait: output streams as the container
//! writes it, and the command exits with the container's exit code (125 when the daemon could
//! not create or start it, 126/127 when the program could not be run, as Docker).

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Result, bail};
use shoal_proto::engine_client::EngineClient;
use shoal_proto::{
    ContainerCreateRequest, ContainerExecRequest, ContainerKillRequest, ContainerListRequest,
    ContainerLogsRequest, ContainerRef, ContainerRemoveRequest, ContainerRunState, ContainerSpec,
    ContainerStopRequest, ContainerSummary, Duration as PbDuration, LogEntry, Mount, Resources,
    Ulimit, log_entry, mount,
};
use tonic::transport::Channel;

use super::Host;
use super::output::{Format, human_duration, print_json, print_table, time_ago};

type Client = EngineClient<Channel>;

#[derive(Debug, clap::Args)]
pub struct ContainerArgs {
    #[command(subcommand)]
    pub command: ContainerCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ContainerCommand {
    /// Create and start a container; without -d, stream its output and exit with its code.
    Run(Box<RunArgs>),
    /// List containers.
    #[command(alias = "ls", alias = "list")]
    Ps(PsArgs),
    /// Run a command in a running container; exits with the command's code.
    Exec(ExecArgs),
    /// Stop containers: stop signal, then SIGKILL after the grace period.
    Stop(StopArgs),
    /// Send a signal (default KILL) to containers.
    Kill(KillArgs),
    /// Remove containers.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Show a container's output.
    Logs(LogsArgs),
    /// Show containers' details as JSON.
    Inspect(NamesArg),
    /// Wait for containers to exit and print their exit codes.
    Wait(NamesArg),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Run in the background and print the container ID.
    #[arg(short, long)]
    pub detach: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    #[arg(long)]
    pub name: Option<String>,
    /// Environment variable KEY=VALUE (KEY alone takes this shell's value).
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// user[:group], by name or number.
    #[arg(short, long)]
    pub user: Option<String>,
    #[arg(long)]
    pub hostname: Option<String>,
    /// Memory limit, e.g. 64m or 1g.
    #[arg(short, long)]
    pub memory: Option<String>,
    /// CPU limit, e.g. 0.5 or 2.
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Relative CPU weight (default 1024).
    #[arg(long)]
    pub cpu_shares: Option<u64>,
    /// Maximum number of processes (-1: unlimited).
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Bind mount SRC:DST[:ro].
    #[arg(short, long = "volume")]
    pub volume: Vec<String>,
    /// tmpfs mount DST[:size=BYTES][,mode=OCTAL].
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Override the image's entrypoint.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Signal that stops the container (default: the image's, else SIGTERM).
    #[arg(long)]
    pub stop_signal: Option<String>,
    /// Seconds between the stop signal and SIGKILL (default 10).
    #[arg(long)]
    pub stop_timeout: Option<i64>,
    #[arg(long)]
    pub cap_add: Vec<String>,
    #[arg(long)]
    pub cap_drop: Vec<String>,
    /// Resource limit NAME=SOFT[:HARD], e.g. nofile=1024:2048.
    #[arg(long)]
    pub ulimit: Vec<String>,
    /// Join this network namespace (a path, e.g. /run/netns/x) instead of a fresh one.
    #[arg(long, conflicts_with = "network")]
    pub netns: Option<String>,
    /// none: loopback only; bridge: an address on the node-local bridge (shoal0), with
    /// outbound NAT, as Docker's default bridge.
    #[arg(long, value_parser = ["none", "bridge"], default_value = "none")]
    pub network: String,
    pub image: String,
    /// Command and arguments (default: the image's).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// Show all containers (default: running only).
    #[arg(short, long)]
    pub all: bool,
    /// Only show container IDs.
    #[arg(short, long)]
    pub quiet: bool,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// Seconds to wait before SIGKILL (default: the container's grace period).
    #[arg(short = 't', long = "time")]
    pub time: Option<i64>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Environment variable KEY=VALUE (KEY alone takes this shell's value).
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// user[:group], by name or number (default: the container's).
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory inside the container (default: the container's).
    #[arg(short, long)]
    pub workdir: Option<String>,
    pub container: String,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct KillArgs {
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// Kill a running container first.
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Follow the output until the container exits.
    #[arg(short, long)]
    pub follow: bool,
    /// Number of lines from the end ("all" for everything).
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Show timestamps.
    #[arg(short, long)]
    pub timestamps: bool,
    pub container: String,
}

#[derive(Debug, clap::Args)]
pub struct NamesArg {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub async fn run(host: &Host, args: ContainerArgs) -> Result<ExitCode> {
    let mut client = EngineClient::new(super::client::connect(host).await?);
    match args.command {
        ContainerCommand::Run(a) => return run_container(&mut client, *a).await,
        ContainerCommand::Ps(a) => ps(&mut client, a).await?,
        ContainerCommand::Exec(a) => return exec(&mut client, a).await,
        ContainerCommand::Stop(a) => {
            for_each(&a.containers, |id| {
                let mut c = client.clone();
                let timeout = a.time.map(|s| PbDuration {
                    seconds: s.max(0),
                    nanos: 0,
                });
                async move {
                    c.container_stop(ContainerStopRequest { id, timeout })
                        .await
                        .map(|_| ())
                }
            })
            .await?
        }
        ContainerCommand::Kill(a) => {
            for_each(&a.containers, |id| {
                let mut c = client.clone();
                let signal = a.signal.clone();
                async move {
                    c.container_kill(ContainerKillRequest { id, signal })
                        .await
                        .map(|_| ())
                }
            })
            .await?
        }
        ContainerCommand::Rm(a) => {
            for_each(&a.containers, |id| {
                let mut c = client.clone();
                let force = a.force;
                async move {
                    c.container_remove(ContainerRemoveRequest { id, force })
                        .await
                        .map(|_| ())
                }
            })
            .await?
        }
        ContainerCommand::Logs(a) => logs(&mut client, a).await?,
        ContainerCommand::Inspect(a) => {
            let mut out = Vec::new();
            for id in a.containers {
                out.push(
                    client
                        .container_inspect(ContainerRef { id })
                        .await?
                        .into_inner(),
                );
            }
            print_json(&out)?;
        }
        ContainerCommand::Wait(a) => {
            for id in a.containers {
                let exit = client
                    .container_wait(ContainerRef { id })
                    .await?
                    .into_inner();
                println!("{}", exit.exit_code);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `container exec`: the command's output on our stdout and stderr, and its exit code as ours.
async fn exec(client: &mut Client, a: ExecArgs) -> Result<ExitCode> {
    let out = client
        .container_exec(ContainerExecRequest {
            id: a.container,
            cmd: a.command,
            env: a.env.iter().map(|e| env_entry(e)).collect(),
            user: a.user.unwrap_or_default(),
            workdir: a.workdir.unwrap_or_default(),
            timeout: None,
        })
        .await?
        .into_inner();
    std::io::stdout().write_all(&out.stdout)?;
    std::io::stdout().flush()?;
    std::io::stderr().write_all(&out.stderr)?;
    Ok(ExitCode::from(u8::try_from(out.exit_code).unwrap_or(255)))
}

/// KEY=VALUE as given, or KEY with this shell's value (Docker's `-e KEY`).
fn env_entry(e: &str) -> String {
    if e.contains('=') {
        e.to_string()
    } else {
        format!("{e}={}", std::env::var(e).unwrap_or_default())
    }
}

/// Applies a call to each container, printing each name as done (Docker's way) and failing at
/// the end if any failed.
async fn for_each<F, Fut>(ids: &[String], mut call: F) -> Result<()>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let mut last_err = None;
    for id in ids {
        match call(id.clone()).await {
            Ok(()) => println!("{id}"),
            Err(e) => {
                eprintln!("Error: {}", super::client::describe_status(&e));
                last_err = Some(e);
            }
        }
    }
    match last_err {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Builds the create request from `run`'s flags.
fn create_request(a: &RunArgs) -> Result<ContainerCreateRequest> {
    let env = a.env.iter().map(|e| env_entry(e)).collect();
    let mut mounts = Vec::new();
    for v in &a.volume {
        let parts: Vec<&str> = v.split(':').collect();
        let (src, dst, ro) = match parts.as_slice() {
            [s, d] => (*s, *d, false),
            [s, d, "ro"] => (*s, *d, true),
            [s, d, "rw"] => (*s, *d, false),
            _ => bail!("invalid volume {v:?}: use SRC:DST or SRC:DST:ro, with absolute paths"),
        };
        if !src.starts_with('/') {
            bail!(
                "invalid volume {v:?}: the source must be an absolute host path (named volumes are not supported)"
            );
        }
        mounts.push(Mount {
            r#type: mount::Type::Bind as i32,
            source: src.into(),
            target: dst.into(),
            read_only: ro,
            ..Default::default()
        });
    }
    for t in &a.tmpfs {
        let (dst, opts) = t.split_once(':').unwrap_or((t, ""));
        let mut m = Mount {
            r#type: mount::Type::Tmpfs as i32,
            target: dst.into(),
            ..Default::default()
        };
        for o in opts.split(',').filter(|o| !o.is_empty()) {
            match o.split_once('=') {
                Some(("size", s)) => m.tmpfs_size_bytes = parse_bytes(s)?,
                Some(("mode", s)) => {
                    m.tmpfs_mode = u32::from_str_radix(s, 8).map_err(|_| {
                        anyhow::anyhow!("invalid tmpfs mode {s:?}: use octal, e.g. 1777")
                    })?
                }
                _ if o == "ro" => m.read_only = true,
                _ => bail!("invalid tmpfs option {o:?}: use size=BYTES, mode=OCTAL or ro"),
            }
        }
        mounts.push(m);
    }
    let ulimits = a
        .ulimit
        .iter()
        .map(|u| {
            let bad = || {
                anyhow::anyhow!("invalid ulimit {u:?}: use NAME=SOFT[:HARD], e.g. nofile=1024:2048")
            };
            let (name, v) = u.split_once('=').ok_or_else(bad)?;
            let (soft, hard) = v.split_once(':').unwrap_or((v, v));
            Ok(Ulimit {
                name: name.into(),
                soft: soft.parse().map_err(|_| bad())?,
                hard: hard.parse().map_err(|_| bad())?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let nano_cpus = match a.cpus {
        Some(c) if !(c > 0.0 && c.is_finite()) => {
            bail!("invalid --cpus {c}: give a positive number, e.g. 0.5")
        }
        Some(c) => (c * 1e9).round() as i64,
        None => 0,
    };
    let memory_bytes = match &a.memory {
        Some(m) => parse_bytes(m)?,
        None => 0,
    };
    let spec = ContainerSpec {
        image: a.image.clone(),
        command: a
            .entrypoint
            .iter()
            .filter(|e| !e.is_empty())
            .cloned()
            .collect(),
        args: a.command.clone(),
        hostname: a.hostname.clone().unwrap_or_default(),
        env,
        dir: a.workdir.clone().unwrap_or_default(),
        user: a.user.clone().unwrap_or_default(),
        read_only: a.read_only,
        mounts,
        stop_signal: a.stop_signal.clone().unwrap_or_default(),
        stop_grace_period: a.stop_timeout.map(|s| PbDuration {
            seconds: s.max(0),
            nanos: 0,
        }),
        capability_add: a.cap_add.clone(),
        capability_drop: a.cap_drop.clone(),
        ulimits,
        ..Default::default()
    };
    Ok(ContainerCreateRequest {
        name: a.name.clone().unwrap_or_default(),
        spec: Some(spec),
        limits: Some(Resources {
            nano_cpus,
            memory_bytes,
            pids: a.pids_limit.unwrap_or(0),
        }),
        network_namespace: a.netns.clone().unwrap_or_default(),
        cpu_shares: a.cpu_shares.unwrap_or(0),
        // In the foreground the CLI removes the container after reading its exit code.
        auto_remove: a.rm && a.detach,
        network: a.network.clone(),
    })
}

/// `64m`, `1g`, `512k`, `100` (bytes), as Docker reads sizes (powers of 1024).
pub fn parse_bytes(s: &str) -> Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').filter(|x| !x.is_empty()).unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num.parse().map_err(|_| {
        anyhow::anyhow!("invalid size {s:?}: use a number with an optional unit, e.g. 64m or 1g")
    })?;
    if !(n >= 0.0 && n.is_finite()) {
        bail!("invalid size {s:?}: it must be positive");
    }
    Ok((n * mult as f64) as i64)
}

/// The exit code a failed start carries in its status metadata (125 when absent).
fn start_exit_code(status: &tonic::Status) -> u8 {
    status
        .metadata()
        .get(crate::daemon::EXIT_CODE_KEY)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(125)
}

async fn run_container(client: &mut Client, a: RunArgs) -> Result<ExitCode> {
    let request = create_request(&a)?;
    let id = match client.container_create(request).await {
        Ok(r) => {
            let r = r.into_inner();
            for w in &r.warnings {
                eprintln!("Warning: {w}");
            }
            r.id
        }
        Err(e) => {
            eprintln!("Error: {}", super::client::describe_status(&e));
            return Ok(ExitCode::from(125));
        }
    };
    if let Err(e) = client
        .container_start(ContainerRef { id: id.clone() })
        .await
    {
        eprintln!("Error: {}", super::client::describe_status(&e));
        if a.rm {
            let _ = client
                .container_remove(ContainerRemoveRequest { id, force: true })
                .await;
        }
        return Ok(ExitCode::from(start_exit_code(&e)));
    }
    if a.detach {
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    let mut stream = client
        .container_logs(ContainerLogsRequest {
            id: id.clone(),
            follow: true,
            tail: -1,
        })
        .await?
        .into_inner();
    while let Some(entry) = stream.message().await? {
        write_entry(&entry, false, "");
    }
    let exit = client
        .container_wait(ContainerRef { id: id.clone() })
        .await?
        .into_inner();
    if a.rm {
        client
            .container_remove(ContainerRemoveRequest { id, force: true })
            .await?;
    }
    Ok(ExitCode::from(exit.exit_code.clamp(0, 255) as u8))
}

/// Writes a log line to our stdout or stderr, as the container wrote it, after `header`
/// (`service logs` names the task there).
pub(super) fn write_entry(entry: &LogEntry, timestamps: bool, header: &str) {
    let mut prefix = if timestamps {
        let t = entry.time.unwrap_or_default();
        format!(
            "{} ",
            shoal_worker::engine::time::format_rfc3339(shoal_worker::engine::time::to_system(&t))
        )
    } else {
        String::new()
    };
    prefix.push_str(header);
    if entry.stream == log_entry::Stream::Stderr as i32 {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(prefix.as_bytes());
        let _ = err.write_all(&entry.line);
    } else {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(prefix.as_bytes());
        let _ = out.write_all(&entry.line);
        let _ = out.flush();
    }
}

async fn logs(client: &mut Client, a: LogsArgs) -> Result<()> {
    let tail = if a.tail == "all" {
        -1
    } else {
        a.tail
            .parse::<i64>()
            .map_err(|_| anyhow::anyhow!("invalid --tail {:?}: give a number or \"all\"", a.tail))?
    };
    let mut stream = client
        .container_logs(ContainerLogsRequest {
            id: a.container,
            follow: a.follow,
            tail,
        })
        .await?
        .into_inner();
    while let Some(entry) = stream.message().await? {
        write_entry(&entry, a.timestamps, "");
    }
    Ok(())
}

async fn ps(client: &mut Client, a: PsArgs) -> Result<()> {
    let containers = client
        .container_list(ContainerListRequest { all: a.all })
        .await?
        .into_inner()
        .containers;
    if a.quiet {
        let ids: String = containers
            .iter()
            .map(|c| format!("{}\n", &c.id[..12.min(c.id.len())]))
            .collect();
        super::output::print_lines(&ids);
        return Ok(());
    }
    if a.format == Format::Json {
        return print_json(&containers);
    }
    let rows: Vec<Vec<String>> = containers
        .iter()
        .map(|c| {
            vec![
                c.id[..12.min(c.id.len())].to_string(),
                c.image.clone(),
                quote_command(&c.command),
                c.created.map(time_ago).unwrap_or_default(),
                status_text(c),
                String::new(),
                c.name.clone(),
            ]
        })
        .collect();
    print_table(
        &[
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "PORTS",
            "NAMES",
        ],
        &rows,
    );
    Ok(())
}

/// `"sh -c 'sleep…"`: quoted and cut at 20 characters, as `docker ps`.
fn quote_command(cmd: &str) -> String {
    let chars: Vec<char> = cmd.chars().collect();
    if chars.len() > 20 {
        format!("\"{}…\"", chars[..19].iter().collect::<String>())
    } else {
        format!("\"{cmd}\"")
    }
}

/// Docker's STATUS column: `Up 5 seconds`, `Exited (0) 3 minutes ago`, `Created`.
fn status_text(c: &ContainerSummary) -> String {
    let since = |t: Option<shoal_proto::Timestamp>| {
        t.map(|t| {
            std::time::SystemTime::now()
                .duration_since(shoal_worker::engine::time::to_system(&t))
                .unwrap_or_default()
        })
        .unwrap_or_default()
    };
    match ContainerRunState::try_from(c.status).unwrap_or_default() {
        ContainerRunState::Created => "Created".into(),
        ContainerRunState::Running => format!("Up {}", human_duration(since(c.started_at))),
        ContainerRunState::Exited => {
            format!(
                "Exited ({}) {} ago",
                c.exit_code,
                human_duration(since(c.finished_at))
            )
        }
        ContainerRunState::Dead => "Dead".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_docker() {
        assert_eq!(parse_bytes("64m").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("512kb").unwrap(), 512 << 10);
        assert_eq!(parse_bytes("100").unwrap(), 100);
        assert!(parse_bytes("lots").unwrap_err().to_string().contains("64m"));
    }

    #[test]
    fn commands_are_quoted_and_cut() {
        assert_eq!(quote_command("true"), "\"true\"");
        assert_eq!(
            quote_command("sh -c 'sleep 100; echo done'"),
            "\"sh -c 'sleep 100; e…\""
        );
    }

    #[test]
    fn run_flags_become_a_spec() {
        let a = RunArgs {
            detach: false,
            rm: false,
            name: Some("web".into()),
            env: vec!["A=1".into()],
            workdir: None,
            user: Some("1000".into()),
            hostname: None,
            memory: Some("64m".into()),
            cpus: Some(0.5),
            cpu_shares: None,
            pids_limit: Some(20),
            volume: vec!["/data:/mnt:ro".into()],
            tmpfs: vec!["/run:size=1m".into()],
            read_only: true,
            entrypoint: None,
            stop_signal: None,
            stop_timeout: Some(3),
            cap_add: vec![],
            cap_drop: vec![],
            ulimit: vec!["nofile=10:20".into()],
            netns: None,
            network: "bridge".into(),
            image: "busybox".into(),
            command: vec!["true".into()],
        };
        let r = create_request(&a).unwrap();
        let spec = r.spec.unwrap();
        let limits = r.limits.unwrap();
        assert_eq!(
            (limits.memory_bytes, limits.nano_cpus, limits.pids),
            (64 << 20, 500_000_000, 20)
        );
        assert_eq!(spec.mounts.len(), 2);
        assert!(spec.mounts[0].read_only);
        assert_eq!(spec.mounts[1].tmpfs_size_bytes, 1 << 20);
        assert_eq!(spec.ulimits[0].hard, 20);
        assert_eq!(spec.args, vec!["true"]);
        assert_eq!(r.network, "bridge");
        let bad = RunArgs {
            volume: vec!["data:/mnt".into()],
            ..a
        };
        assert!(
            create_request(&bad)
                .unwrap_err()
                .to_string()
                .contains("absolute")
        );
    }
}
