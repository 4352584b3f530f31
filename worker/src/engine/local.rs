//! The real engine: containers on this node, supervised by one `shoal shim` process each.
//!
//! The daemon's side of a container is a [`Container`]: its record, the last known state and
//! a watch channel that fires once it exits. A watcher task per running container holds a
//! connection to the shim's socket and learns of the exit there; when the daemon restarts,
//! [`LocalEngine::open`] finds the containers on disk and starts watchers for the running ones
//! (re-adoption). If a shim is gone, state.json says how the container ended.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_proto::{
    ContainerDetails, ContainerExit, ContainerState, ContainerSummary, EngineSummary, ImageDetails,
    ImageImportResponse, ImageRemoveResponse, ImageSummary, LogEntry, Timestamp,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};

use super::cgroups::{self, Limits};
use super::containers::{
    ContainerDir, ContainerRecord, ShimConfig, StateFile, Status, read_json, write_json,
};
use super::error::{EngineError, Result, io_err};
use super::images::store::{random_hex, remove_path};
use super::images::{self, ImageStore, ImportOptions};
use super::runtime::plan::RootfsMount;
use super::runtime::spec::{self as specgen, parse_signal};
use super::shim::StartReport;
use super::{
    ContainerConfig, EXEC_OUTPUT_LIMIT, Engine, ExecOptions, ExecOutput, LogOptions, logs, names,
    nsexec,
};

/// How the daemon configures its engine.
#[derive(Debug, Clone)]
pub struct LocalEngineOptions {
    /// The daemon's state directory; the engine keeps everything under `<state_dir>/engine`.
    pub state_dir: PathBuf,
    /// Cgroup under which containers' cgroups are made (in every hierarchy).
    pub cgroup_parent: String,
    /// The `shoal` binary, run as `shoal shim <dir>`.
    pub shim_exe: PathBuf,
    pub log_max_size: u64,
    pub log_max_files: u32,
}

/// The engine; cheap to clone (shared state).
#[derive(Clone)]
pub struct LocalEngine {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    images: ImageStore,
    containers: Mutex<BTreeMap<String, Arc<Container>>>,
    /// Serializes creates, so two cannot take the same name.
    create_lock: Mutex<()>,
    opts: LocalEngineOptions,
    ncpu: i64,
}

struct Container {
    record: ContainerRecord,
    dir: ContainerDir,
    state: Mutex<StateFile>,
    /// Some once the container has exited (for waiters).
    exit: watch::Sender<Option<ContainerExit>>,
    /// Serializes start/stop/remove of this container.
    op: tokio::sync::Mutex<()>,
}

impl Container {
    fn state(&self) -> StateFile {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_state(&self, s: StateFile) {
        if matches!(s.status, Status::Exited | Status::Dead) {
            self.exit.send_replace(Some(exit_of(&s)));
        }
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }
}

fn exit_of(s: &StateFile) -> ContainerExit {
    ContainerExit {
        exit_code: s.exit_code,
        oom_killed: s.oom_killed,
        finished_at: s.finished_at,
        error: s.error.clone(),
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EngineError::Internal(format!("engine task failed: {e}")))?
}

impl LocalEngine {
    /// Opens the engine's store and re-adopts the containers that still run.
    pub async fn open(opts: LocalEngineOptions) -> Result<LocalEngine> {
        cgroups::validate_rel(&opts.cgroup_parent)?;
        let inner = blocking(move || Inner::open(opts)).await?;
        let engine = LocalEngine {
            inner: Arc::new(inner),
        };
        for c in engine.inner.all() {
            match c.state().status {
                Status::Running => {
                    tracing::info!(container = %c.record.id, "re-adopting running container");
                    tokio::spawn(watch_exit(engine.clone(), c.clone()));
                }
                Status::Exited | Status::Dead => {
                    c.exit.send_replace(Some(exit_of(&c.state())));
                    if c.record.auto_remove {
                        let _ = engine.remove_container(&c.record.id, true).await;
                    }
                }
                Status::Created => {}
            }
        }
        Ok(engine)
    }

    fn find(&self, id: &str) -> Result<Arc<Container>> {
        self.inner.find(id)
    }

    /// A fresh path inside the store for an upload in progress (emptied at start-up, so an
    /// interrupted upload never lingers).
    pub fn upload_path(&self) -> PathBuf {
        self.inner
            .images
            .root()
            .join("tmp")
            .join(format!("upload-{}", random_hex(8)))
    }
}

impl Inner {
    fn open(opts: LocalEngineOptions) -> Result<Inner> {
        let root = opts.state_dir.join("engine");
        let images = ImageStore::open(&root.join("images"))?;
        let cdir = root.join("containers");
        std::fs::create_dir_all(&cdir).map_err(io_err("cannot create", &cdir))?;
        // Removed containers wait here to be deleted; finish what a crash interrupted.
        let trash = root.join("trash");
        std::fs::create_dir_all(&trash).map_err(io_err("cannot create", &trash))?;
        for entry in std::fs::read_dir(&trash)
            .map_err(io_err("cannot read", &trash))?
            .flatten()
        {
            remove_path(&entry.path());
        }
        let mut containers = BTreeMap::new();
        for entry in std::fs::read_dir(&cdir)
            .map_err(io_err("cannot read", &cdir))?
            .flatten()
        {
            let dir = ContainerDir::new(entry.path());
            let record: ContainerRecord = match read_json(&dir.record()) {
                Ok(r) => r,
                Err(e) => {
                    // A create that crashed half-way: never visible, now removed.
                    tracing::warn!(dir = %dir.root.display(), error = %e, "removing incomplete container");
                    remove_path(&dir.root);
                    continue;
                }
            };
            let state = dir.read_state().unwrap_or_default();
            let (exit, _) = watch::channel(None);
            containers.insert(
                record.id.clone(),
                Arc::new(Container {
                    record,
                    dir,
                    state: Mutex::new(state),
                    exit,
                    op: tokio::sync::Mutex::new(()),
                }),
            );
        }
        let ncpu = std::thread::available_parallelism()
            .map(|n| n.get() as i64)
            .unwrap_or(1);
        Ok(Inner {
            root,
            images,
            containers: Mutex::new(containers),
            create_lock: Mutex::new(()),
            opts,
            ncpu,
        })
    }

    fn all(&self) -> Vec<Arc<Container>> {
        self.containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// By full ID, name, or unique ID prefix.
    fn find(&self, key: &str) -> Result<Arc<Container>> {
        let map = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(key) {
            return Ok(c.clone());
        }
        if let Some(c) = map.values().find(|c| c.record.name == key) {
            return Ok(c.clone());
        }
        let matches: Vec<_> = if key.is_empty() {
            Vec::new()
        } else {
            map.values()
                .filter(|c| c.record.id.starts_with(key))
                .collect()
        };
        match matches.len() {
            1 => Ok(matches[0].clone()),
            0 => Err(EngineError::NotFound(format!(
                "no such container: {key}; see `shoal container ps -a`"
            ))),
            _ => Err(EngineError::InvalidArgument(format!(
                "container ID prefix {key} is ambiguous; give more characters"
            ))),
        }
    }

    fn create(&self, config: ContainerConfig) -> Result<(String, Vec<String>)> {
        let _guard = self.create_lock.lock().unwrap_or_else(|p| p.into_inner());
        let image_ref = config.spec.image.clone();
        if image_ref.is_empty() {
            return Err(EngineError::InvalidArgument(
                "no image given; name one, e.g. `shoal container run busybox true`".into(),
            ));
        }
        let name = match config.name.clone().filter(|n| !n.is_empty()) {
            Some(n) => {
                let n = n.trim_start_matches('/').to_string();
                if !names::valid(&n) {
                    return Err(EngineError::InvalidArgument(format!(
                        "invalid container name {n:?}: use letters, digits, '_', '.' and '-', \
                         starting with a letter or digit"
                    )));
                }
                if let Ok(other) = self.find(&n)
                    && other.record.name == n
                {
                    return Err(EngineError::Conflict(format!(
                        "the container name {n:?} is already in use by container {}; remove \
                         it (`shoal container rm {n}`) or choose another name",
                        &other.record.id[..12]
                    )));
                }
                n
            }
            None => self.unused_name(),
        };
        let image = self.images.resolve(&image_ref)?;
        let id = random_hex(32);
        let dir = ContainerDir::new(self.root.join("containers").join(&id));
        std::fs::create_dir_all(&dir.root).map_err(io_err("cannot create", &dir.root))?;
        let result = self.prepare(&id, &name, &image_ref, &image, &config, &dir);
        match result {
            Ok(c) => {
                let warnings = Vec::new();
                self.containers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id.clone(), Arc::new(c));
                Ok((id, warnings))
            }
            Err(e) => {
                remove_path(&dir.root);
                Err(e)
            }
        }
    }

    fn unused_name(&self) -> String {
        for _ in 0..16 {
            let bytes = random_hex(2);
            let raw = [
                u8::from_str_radix(&bytes[..2], 16).unwrap_or(0),
                u8::from_str_radix(&bytes[2..], 16).unwrap_or(0),
            ];
            let n = names::generate(&raw);
            if self.find(&n).is_err() {
                return n;
            }
        }
        format!("{}_{}", names::generate(&[0, 0]), random_hex(3))
    }

    /// Writes everything a container's directory holds before its first start.
    fn prepare(
        &self,
        id: &str,
        name: &str,
        image_ref: &str,
        image: &images::ImageRecord,
        config: &ContainerConfig,
        dir: &ContainerDir,
    ) -> Result<Container> {
        let cgroup = format!("{}/{}", self.opts.cgroup_parent.trim_matches('/'), id);
        let built = specgen::build(&specgen::SpecInput {
            id,
            spec: &config.spec,
            limits: &config.limits,
            cpu_shares: config.cpu_shares,
            image: &image.config,
            netns: config.network_namespace.as_deref(),
            cgroups_path: &format!("/{cgroup}"),
            files_dir: &dir.root,
            ncpu: self.ncpu,
        })?;
        for m in &config.spec.mounts {
            if m.r#type == shoal_proto::mount::Type::Bind as i32 && !Path::new(&m.source).exists() {
                return Err(EngineError::InvalidArgument(format!(
                    "bind mount source {} does not exist on this node; create it first",
                    m.source
                )));
            }
        }
        if let Some(ns) = &config.network_namespace
            && !Path::new(ns).exists()
        {
            return Err(EngineError::InvalidArgument(format!(
                "network namespace {ns} does not exist"
            )));
        }
        for sub in ["upper", "work", "l", "rootfs"] {
            let p = dir.root.join(sub);
            std::fs::create_dir(&p).map_err(io_err("cannot create", &p))?;
        }
        // Short links to the layers, top first: overlayfs' option string stays small.
        let mut lowers = Vec::new();
        for (i, layer) in image.layers.iter().rev().enumerate() {
            let link = dir.root.join("l").join(i.to_string());
            std::os::unix::fs::symlink(self.images.layer_path(layer), &link)
                .map_err(io_err("cannot create", &link))?;
            lowers.push(i.to_string());
        }
        if lowers.is_empty() {
            let empty = dir.root.join("l/empty");
            std::fs::create_dir(&empty).map_err(io_err("cannot create", &empty))?;
            lowers.push("empty".into());
        }
        write_etc_files(dir, &built.hostname, &config.spec)?;
        write_json(&dir.root, &dir.spec(), &built.spec)?;
        let res = config.limits;
        let limits = Limits {
            memory: (res.memory_bytes > 0).then_some(res.memory_bytes),
            cpu_quota: (res.nano_cpus > 0).then_some(res.nano_cpus * 100_000 / 1_000_000_000),
            cpu_period: (res.nano_cpus > 0).then_some(100_000),
            cpu_shares: config.cpu_shares,
            pids: (res.pids != 0).then_some(res.pids),
        };
        let shim = ShimConfig {
            id: id.to_string(),
            cgroup: cgroup.clone(),
            limits,
            rootfs: RootfsMount {
                links_dir: dir.root.join("l"),
                lowers,
                upper: dir.root.join("upper"),
                work: dir.root.join("work"),
                target: dir.root.join("rootfs"),
            },
            log_max_size: self.opts.log_max_size,
            log_max_files: self.opts.log_max_files,
        };
        write_json(&dir.root, &dir.shim_config(), &shim)?;
        let record = ContainerRecord {
            id: id.to_string(),
            name: name.to_string(),
            image: image_ref.to_string(),
            image_id: image.id.clone(),
            created: Timestamp::now(),
            spec: config.spec.clone(),
            limits: config.limits,
            cpu_shares: config.cpu_shares,
            netns: config.network_namespace.clone(),
            args: built.args,
            env: built.env,
            cwd: built.cwd,
            user: built.user,
            hostname: built.hostname,
            stop_signal: built.stop_signal,
            stop_grace_ms: built.stop_grace.as_millis() as u64,
            healthcheck: built.healthcheck,
            cgroup,
            auto_remove: config.auto_remove,
        };
        let state = StateFile::default();
        dir.write_state(&state)?;
        // The record last: a directory without one is an unfinished create.
        write_json(&dir.root, &dir.record(), &record)?;
        let (exit, _) = watch::channel(None);
        Ok(Container {
            record,
            dir: dir.clone(),
            state: Mutex::new(state),
            exit,
            op: tokio::sync::Mutex::new(()),
        })
    }
}

/// /etc/hostname, /etc/hosts and /etc/resolv.conf, bind-mounted into the container.
fn write_etc_files(
    dir: &ContainerDir,
    hostname: &str,
    spec: &shoal_proto::ContainerSpec,
) -> Result<()> {
    let mut hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    );
    for h in &spec.hosts {
        hosts.push_str(h);
        hosts.push('\n');
    }
    let resolv = match &spec.dns_config {
        Some(d) if !d.nameservers.is_empty() || !d.search.is_empty() || !d.options.is_empty() => {
            let mut s = String::new();
            for n in &d.nameservers {
                s.push_str(&format!("nameserver {n}\n"));
            }
            if !d.search.is_empty() {
                s.push_str(&format!("search {}\n", d.search.join(" ")));
            }
            if !d.options.is_empty() {
                s.push_str(&format!("options {}\n", d.options.join(" ")));
            }
            s
        }
        _ => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    };
    for (file, content) in [
        ("hostname", format!("{hostname}\n")),
        ("hosts", hosts),
        ("resolv.conf", resolv),
    ] {
        let path = dir.root.join(file);
        std::fs::write(&path, content).map_err(io_err("cannot write", &path))?;
    }
    Ok(())
}

/// Waits for an exec's nsexec process and gathers what it wrote, killing it at the timeout.
async fn collect_exec(mut child: tokio::process::Child, timeout: Option<Duration>) -> ExecOutput {
    use tokio::io::AsyncReadExt;
    // Output may outlive the command (a background process holding the pipe): once the
    // command has ended, what arrives within this grace is kept and the rest ignored.
    const DRAIN_GRACE: Duration = Duration::from_millis(200);
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (mut buf_out, mut buf_err) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    let far = tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let deadline = timeout.map_or(far, |t| tokio::time::Instant::now() + t);
    let mut drain_until = far;
    let mut status: Option<i32> = None;
    let mut timed_out = false;
    let keep = |into: &mut Vec<u8>, data: &[u8]| {
        let room = EXEC_OUTPUT_LIMIT.saturating_sub(into.len());
        into.extend_from_slice(&data[..data.len().min(room)]);
    };
    loop {
        if status.is_some() && stdout.is_none() && stderr.is_none() {
            break;
        }
        tokio::select! {
            n = async { stdout.as_mut().expect("guarded").read(&mut buf_out).await },
                if stdout.is_some() => match n {
                Ok(n) if n > 0 => keep(&mut out, &buf_out[..n]),
                _ => stdout = None,
            },
            n = async { stderr.as_mut().expect("guarded").read(&mut buf_err).await },
                if stderr.is_some() => match n {
                Ok(n) if n > 0 => keep(&mut err, &buf_err[..n]),
                _ => stderr = None,
            },
            s = child.wait(), if status.is_none() => {
                status = Some(s.ok().and_then(|s| {
                    use std::os::unix::process::ExitStatusExt;
                    s.code().or_else(|| s.signal().map(|sig| 128 + sig))
                }).unwrap_or(-1));
                drain_until = tokio::time::Instant::now() + DRAIN_GRACE;
            }
            _ = tokio::time::sleep_until(drain_until), if status.is_some() => break,
            _ = tokio::time::sleep_until(deadline), if status.is_none() && !timed_out => {
                timed_out = true;
                let _ = child.start_kill();
            }
        }
    }
    ExecOutput {
        exit_code: if timed_out { -1 } else { status.unwrap_or(-1) },
        stdout: out,
        stderr: err,
        timed_out,
    }
}

/// Follows a running container until it exits, through its shim's socket, then records how
/// it ended. Also used to re-adopt containers after a daemon restart.
async fn watch_exit(engine: LocalEngine, c: Arc<Container>) {
    wait_for_exit(&c).await;
    if c.record.auto_remove
        && let Err(e) = engine.remove_container(&c.record.id, true).await
    {
        tracing::warn!(container = %c.record.id, error = %e, "cannot auto-remove");
    }
}

async fn wait_for_exit(c: &Container) {
    loop {
        if let Ok(mut stream) = connect_shim(&c.dir).await
            && stream.write_all(b"wait\n").await.is_ok()
        {
            // The reply (or EOF, if the shim dies) only says "look now": state.json has the
            // details and is written before the reply.
            let mut line = String::new();
            let _ = BufReader::new(stream).read_line(&mut line).await;
        }
        let dir = c.dir.clone();
        let state = blocking(move || dir.read_state()).await.unwrap_or_default();
        if matches!(state.status, Status::Exited | Status::Dead) {
            c.set_state(state);
            return;
        }
        if shim_alive(&state, &c.dir.root) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        // The shim vanished (killed) without recording an exit; its container died with it
        // (the init dies with its parent), so it is over, outcome unknown.
        let mut state = state;
        state.status = Status::Dead;
        state.exit_code = 255;
        state.error = format!(
            "the container's supervisor (pid {}) died without recording an exit status",
            state.shim_pid
        );
        state.finished_at = Some(Timestamp::now());
        let dir = c.dir.clone();
        let s2 = state.clone();
        let _ = blocking(move || dir.write_state(&s2)).await;
        c.set_state(state);
        return;
    }
}

/// Connects to a shim's socket (through the directory's fd: the full path may be too long).
async fn connect_shim(dir: &ContainerDir) -> std::io::Result<UnixStream> {
    let fd = dir.open_dir()?;
    UnixStream::connect(dir.socket_via(&fd)).await
}

/// Whether the shim named in the state still runs (and is ours, not a reused PID).
fn shim_alive(state: &StateFile, dir: &Path) -> bool {
    if state.shim_pid <= 0 {
        return false;
    }
    std::fs::read(format!("/proc/{}/cmdline", state.shim_pid))
        .map(|cmd| String::from_utf8_lossy(&cmd).contains(&*dir.to_string_lossy()))
        .unwrap_or(false)
}

/// Sends one request to a shim and reads its one-line answer.
async fn shim_request(c: &Container, request: &str) -> Result<String> {
    let not_running =
        || EngineError::Conflict(format!("container {} is not running", c.record.name));
    let mut stream = connect_shim(&c.dir).await.map_err(|_| not_running())?;
    stream
        .write_all(format!("{request}\n").as_bytes())
        .await
        .map_err(|_| not_running())?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .await
        .map_err(|_| not_running())?;
    match line.trim() {
        "ok" => Ok(String::new()),
        "" => Err(not_running()),
        other => Err(EngineError::Conflict(
            other.strip_prefix("err ").unwrap_or(other).to_string(),
        )),
    }
}

impl LocalEngine {
    async fn send_signal(&self, c: &Container, sig: nix::sys::signal::Signal) -> Result<()> {
        shim_request(c, &format!("kill {}", sig as i32))
            .await
            .map(|_| ())
    }

    /// Waits for the exit at most `limit`; true if it came.
    async fn wait_exit(c: &Container, limit: Duration) -> bool {
        let mut rx = c.exit.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|e| e.is_some()))
            .await
            .is_ok()
    }

    /// Spawns the shim and waits for its start report.
    async fn spawn_shim(&self, c: &Arc<Container>) -> Result<StartReport> {
        let shim_log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(c.dir.shim_log())
            .map_err(io_err("cannot open", &c.dir.shim_log()))?;
        let mut cmd = tokio::process::Command::new(&self.inner.opts.shim_exe);
        cmd.arg("shim")
            .arg(&c.dir.root)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(shim_log)
            .process_group(0)
            .kill_on_drop(false);
        let mut child = cmd.spawn().map_err(|e| {
            EngineError::Host(format!(
                "cannot run the container supervisor {} shim: {e}",
                self.inner.opts.shim_exe.display()
            ))
        })?;
        let stdout = child.stdout.take();
        // tokio reaps the shim when it exits (it outlives this call).
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        let mut line = String::new();
        if let Some(out) = stdout {
            let mut reader = BufReader::new(out);
            let read = reader.read_line(&mut line);
            if tokio::time::timeout(Duration::from_secs(120), read)
                .await
                .is_err()
            {
                return Err(EngineError::Internal(
                    "the container supervisor did not report within 120 s; see shim.log in the \
                     container's directory"
                        .into(),
                ));
            }
        }
        serde_json::from_str(line.trim()).map_err(|_| {
            let log = std::fs::read_to_string(c.dir.shim_log()).unwrap_or_default();
            let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
            EngineError::Internal(format!("the container supervisor failed to start: {tail}"))
        })
    }
}

impl Engine for LocalEngine {
    async fn import_image(
        &self,
        archive: PathBuf,
        options: ImportOptions,
    ) -> Result<ImageImportResponse> {
        let inner = self.inner.clone();
        blocking(move || {
            let report = images::import(&inner.images, &archive, &options)?;
            Ok(ImageImportResponse {
                images: report
                    .images
                    .into_iter()
                    .map(|(r, tags)| r.summary(tags))
                    .collect(),
                warnings: report.warnings,
            })
        })
        .await
    }

    async fn list_images(&self) -> Result<Vec<ImageSummary>> {
        let inner = self.inner.clone();
        blocking(move || {
            Ok(inner
                .images
                .list()?
                .into_iter()
                .map(|(r, tags)| r.summary(tags))
                .collect())
        })
        .await
    }

    async fn inspect_image(&self, reference: &str) -> Result<ImageDetails> {
        let (inner, reference) = (self.inner.clone(), reference.to_string());
        blocking(move || {
            let r = inner.images.resolve(&reference)?;
            let tags = inner.images.tags(&r.id)?;
            Ok(r.details(tags))
        })
        .await
    }

    async fn remove_image(&self, reference: &str, force: bool) -> Result<ImageRemoveResponse> {
        let (inner, reference) = (self.inner.clone(), reference.to_string());
        blocking(move || {
            let users: Vec<(String, String)> = inner
                .all()
                .iter()
                .map(|c| (c.record.image_id.to_string(), c.record.name.clone()))
                .collect();
            let in_use = |id: &images::digest::Digest| {
                users
                    .iter()
                    .find(|(i, _)| i == id.as_str())
                    .map(|(_, n)| n.clone())
            };
            let (untagged, deleted) = inner.images.remove(&reference, force, &in_use)?;
            Ok(ImageRemoveResponse { untagged, deleted })
        })
        .await
    }

    async fn create_container(&self, config: ContainerConfig) -> Result<(String, Vec<String>)> {
        let inner = self.inner.clone();
        blocking(move || inner.create(config)).await
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        let c = self.find(id)?;
        let _op = c.op.lock().await;
        if c.state().status == Status::Running {
            return Err(EngineError::Conflict(format!(
                "container {} is already running",
                c.record.name
            )));
        }
        c.exit.send_replace(None);
        let report = self.spawn_shim(&c).await?;
        let dir = c.dir.clone();
        let state = blocking(move || dir.read_state()).await?;
        if !report.error.is_empty() {
            c.set_state(state);
            return Err(EngineError::StartFailed {
                message: report.error,
                exit_code: report.exit_code,
            });
        }
        c.set_state(state);
        tokio::spawn(watch_exit(self.clone(), c.clone()));
        Ok(())
    }

    async fn stop_container(&self, id: &str, timeout: Option<Duration>) -> Result<()> {
        let c = self.find(id)?;
        let _op = c.op.lock().await;
        if c.state().status != Status::Running {
            return Ok(());
        }
        let sig = parse_signal(&c.record.stop_signal)?;
        let grace = timeout.unwrap_or(Duration::from_millis(c.record.stop_grace_ms));
        if self.send_signal(&c, sig).await.is_ok() && Self::wait_exit(&c, grace).await {
            return Ok(());
        }
        let _ = self
            .send_signal(&c, nix::sys::signal::Signal::SIGKILL)
            .await;
        if Self::wait_exit(&c, Duration::from_secs(60)).await {
            Ok(())
        } else {
            Err(EngineError::Host(format!(
                "container {} did not exit 60 s after SIGKILL",
                c.record.name
            )))
        }
    }

    async fn kill_container(&self, id: &str, signal: &str) -> Result<()> {
        let c = self.find(id)?;
        let sig = parse_signal(if signal.is_empty() { "KILL" } else { signal })?;
        if c.state().status != Status::Running {
            return Err(EngineError::Conflict(format!(
                "container {} is not running",
                c.record.name
            )));
        }
        self.send_signal(&c, sig).await
    }

    async fn wait_container(&self, id: &str) -> Result<ContainerExit> {
        let c = self.find(id)?;
        let mut rx = c.exit.subscribe();
        let exit = rx
            .wait_for(|e| e.is_some())
            .await
            .map_err(|_| EngineError::Internal("container watch ended".into()))?;
        Ok(exit.clone().unwrap_or_default())
    }

    async fn remove_container(&self, id: &str, force: bool) -> Result<()> {
        let c = self.find(id)?;
        let _op = c.op.lock().await;
        if c.state().status == Status::Running {
            if !force {
                return Err(EngineError::Conflict(format!(
                    "container {} is running; stop it first (`shoal container stop {}`) or \
                     use --force",
                    c.record.name, c.record.name
                )));
            }
            let _ = self
                .send_signal(&c, nix::sys::signal::Signal::SIGKILL)
                .await;
            if !Self::wait_exit(&c, Duration::from_secs(60)).await {
                return Err(EngineError::Host(format!(
                    "container {} did not exit 60 s after SIGKILL",
                    c.record.name
                )));
            }
        }
        let (dir, cgroup) = (c.dir.root.clone(), c.record.cgroup.clone());
        let trash = self.inner.root.join("trash").join(&c.record.id);
        let trash = blocking(move || {
            // The shim removes the cgroup; this catches a shim that was killed.
            if let Ok(cg) = cgroups::open(&cgroup) {
                let _ = cg.destroy();
            }
            // One rename makes the container gone for everyone; deleting its files (the upper
            // layer may be large) happens after the reply.
            std::fs::rename(&dir, &trash).map_err(io_err("cannot remove", &dir))?;
            Ok(trash)
        })
        .await?;
        self.inner
            .containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&c.record.id);
        tokio::task::spawn_blocking(move || remove_path(&trash));
        Ok(())
    }

    async fn list_containers(&self, all: bool) -> Result<Vec<ContainerSummary>> {
        let mut out: Vec<ContainerSummary> = self
            .inner
            .all()
            .iter()
            .filter_map(|c| {
                let s = c.state();
                (all || s.status == Status::Running).then(|| ContainerSummary {
                    id: c.record.id.clone(),
                    name: c.record.name.clone(),
                    image: c.record.image.clone(),
                    image_id: c.record.image_id.to_string(),
                    command: c.record.args.join(" "),
                    created: Some(c.record.created),
                    status: s.status.to_proto() as i32,
                    started_at: s.started_at,
                    finished_at: s.finished_at,
                    exit_code: s.exit_code,
                    labels: c.record.spec.labels.clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| {
            let t = |s: &ContainerSummary| s.created.map(|t| (t.seconds, t.nanos));
            t(b).cmp(&t(a))
        });
        Ok(out)
    }

    async fn inspect_container(&self, id: &str) -> Result<ContainerDetails> {
        let c = self.find(id)?;
        let s = c.state();
        let r = &c.record;
        let cgroup_path = cgroups::open(&r.cgroup)
            .map(|cg| cg.describe())
            .unwrap_or_default();
        Ok(ContainerDetails {
            id: r.id.clone(),
            name: r.name.clone(),
            image: r.image.clone(),
            image_id: r.image_id.to_string(),
            created: Some(r.created),
            state: Some(ContainerState {
                status: s.status.to_proto() as i32,
                pid: if s.status == Status::Running {
                    s.pid as i64
                } else {
                    0
                },
                exit_code: s.exit_code,
                oom_killed: s.oom_killed,
                started_at: s.started_at,
                finished_at: s.finished_at,
                error: s.error.clone(),
            }),
            spec: Some(r.spec.clone()),
            limits: Some(r.limits),
            args: r.args.clone(),
            env: r.env.clone(),
            working_dir: r.cwd.clone(),
            user: r.user.clone(),
            hostname: r.hostname.clone(),
            stop_signal: r.stop_signal.clone(),
            stop_grace_period: Some(Duration::from_millis(r.stop_grace_ms).into()),
            healthcheck: r.healthcheck.clone(),
            log_path: c.dir.log().display().to_string(),
            cgroup_path,
            network_namespace: r.netns.clone().unwrap_or_default(),
        })
    }

    async fn container_logs(
        &self,
        id: &str,
        options: LogOptions,
    ) -> Result<mpsc::Receiver<Result<LogEntry>>> {
        let c = self.find(id)?;
        let (tx, rx) = mpsc::channel(256);
        let max_files = self.inner.opts.log_max_files;
        tokio::spawn(async move {
            let path = c.dir.log();
            let p2 = path.clone();
            let Ok((mut records, mut pos)) =
                blocking(move || Ok(logs::read_all(&p2, max_files))).await
            else {
                return;
            };
            if let Some(n) = options.tail {
                let skip = records.len().saturating_sub(n);
                records.drain(..skip);
            }
            for r in records {
                if tx.send(Ok(r.to_entry())).await.is_err() {
                    return;
                }
            }
            if !options.follow {
                return;
            }
            let mut exit = c.exit.subscribe();
            loop {
                // Read the exit first: the shim writes the last log lines before the exit, so
                // a read after seeing it gets everything.
                let exited = exit.borrow_and_update().is_some();
                let p2 = path.clone();
                let (new, p) = match blocking(move || {
                    let mut p = pos;
                    let new = logs::read_new(&p2, &mut p);
                    Ok((new, p))
                })
                .await
                {
                    Ok(v) => v,
                    Err(_) => return,
                };
                pos = p;
                for r in new {
                    if tx.send(Ok(r.to_entry())).await.is_err() {
                        return;
                    }
                }
                if exited {
                    return;
                }
                tokio::select! {
                    _ = exit.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(rx)
    }

    async fn exec(&self, id: &str, options: ExecOptions) -> Result<ExecOutput> {
        let c = self.find(id)?;
        if c.state().status != Status::Running {
            return Err(EngineError::Conflict(format!(
                "container {} is not running; exec needs a running container",
                c.record.name
            )));
        }
        if options.cmd.is_empty() {
            return Err(EngineError::InvalidArgument(
                "no command given; name one, e.g. `shoal container exec web ls /`".into(),
            ));
        }
        let request = nsexec::ExecRequest {
            cmd: options.cmd,
            env: options.env,
            user: options.user,
            workdir: options.workdir,
        };
        let request = serde_json::to_string(&request)
            .map_err(|e| EngineError::Internal(format!("cannot encode the exec request: {e}")))?;
        let mut cmd = tokio::process::Command::new(&self.inner.opts.shim_exe);
        cmd.arg("nsexec")
            .arg(&c.dir.root)
            .arg(request)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            // A dropped call (client gone, health check cancelled) ends the command too: it
            // dies with nsexec (parent-death signal).
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| {
            EngineError::Host(format!(
                "cannot run {} nsexec: {e}",
                self.inner.opts.shim_exe.display()
            ))
        })?;
        Ok(collect_exec(child, options.timeout).await)
    }

    async fn summary(&self) -> Result<EngineSummary> {
        let all = self.inner.all();
        let running = all
            .iter()
            .filter(|c| c.state().status == Status::Running)
            .count();
        let inner = self.inner.clone();
        let images = blocking(move || inner.images.list()).await?.len();
        Ok(EngineSummary {
            runtime: "shoal (built-in, OCI runtime spec 1.0.2)".into(),
            containers_running: running as u32,
            containers_stopped: (all.len() - running) as u32,
            images: images as u32,
            storage_driver: "overlayfs".into(),
        })
    }
}
