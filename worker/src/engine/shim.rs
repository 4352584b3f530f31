//! The per-container supervisor (`shoal shim <container-dir>`), like containerd's shim: the
//! container's parent for its whole life, independent of the daemon.
//!
//! The daemon execs it fresh (never forks itself); it starts its own session, so neither a
//! daemon crash nor a terminal's Ctrl-C reaches it, and it:
//! 1. makes the cgroup, binds its control socket, clones the container (runtime::spawn);
//! 2. tells the daemon on stdout `{"pid":N}` or `{"error":..,"exit_code":..}` (one JSON line);
//! 3. copies the container's stdout/stderr into the log file, line by line;
//! 4. answers `kill <signo>` and `wait` on `shim.sock` (a restarted daemon reconnects here);
//! 5. reaps the container, drains its pipes, reads the cgroup's OOM counter, writes the exit
//!    into state.json, answers waiters with `exit <code> <oom>`, removes the cgroup and exits.
//!
//! Single-threaded with poll(2) on purpose: the clone in step 1 needs a single-threaded parent,
//! and a container's start latency includes this process's start-up.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, pipe2};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use super::cgroups::{self, Cgroup};
use super::containers::{ContainerDir, ShimConfig, StateFile, Status, read_json};
use super::error::{EngineError, Result};
use super::logs::{LineSplitter, LogWriter};
use super::runtime::{self, plan::Plan, seccomp};

/// The one line the shim prints for the daemon when the start succeeded or failed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StartReport {
    #[serde(default)]
    pub pid: i32,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub exit_code: i32,
}

/// How long to wait for the container's pipes to close after it exited; only processes that
/// escaped the PID namespace (there should be none) could hold them longer.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Runs the supervisor for the container in `dir`; returns once the container has ended.
pub fn run(dir: &Path) -> Result<()> {
    // Its own session: not in the daemon's process group, no controlling terminal.
    let _ = nix::unistd::setsid();
    // Blocked signals stay pending and never act: SIGCHLD is read from a signalfd, and the
    // termination signals must not end a supervisor while its container runs.
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        mask.add(s);
    }
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .map_err(|e| EngineError::Host(format!("cannot block signals: {e}")))?;
    let cdir = ContainerDir::new(dir.to_path_buf());
    let cfg: ShimConfig = read_json(&cdir.shim_config())?;
    match start(&cdir, &cfg, &mask) {
        Ok(sup) => {
            report(&StartReport {
                pid: sup.child.as_raw(),
                ..Default::default()
            });
            sup.supervise(&cdir)
        }
        Err(e) => {
            let exit_code = match &e {
                EngineError::StartFailed { exit_code, .. } => *exit_code,
                _ => 125,
            };
            let state = StateFile {
                status: Status::Exited,
                shim_pid: std::process::id() as i32,
                finished_at: Some(SystemTime::now().into()),
                exit_code,
                error: e.to_string(),
                ..Default::default()
            };
            let _ = cdir.write_state(&state);
            let _ = std::fs::remove_file(cdir.socket());
            report(&StartReport {
                pid: 0,
                error: e.to_string(),
                exit_code,
            });
            Ok(())
        }
    }
}

/// Writes the start report and closes stdout, so the daemon's read ends.
fn report(r: &StartReport) {
    let mut line = serde_json::to_vec(r).unwrap_or_default();
    line.push(b'\n');
    let mut out = std::io::stdout();
    let _ = out.write_all(&line);
    let _ = out.flush();
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(null);
    }
}

struct Supervisor {
    child: Pid,
    cgroup: Box<dyn Cgroup>,
    sigfd: SignalFd,
    listener: UnixListener,
    pipes: Vec<(OwnedFd, &'static str, LineSplitter)>,
    log: Option<LogWriter>,
    clients: Vec<Client>,
    exit_code: Option<i32>,
}

struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
    waiting: bool,
}

fn start(cdir: &ContainerDir, cfg: &ShimConfig, mask: &SigSet) -> Result<Supervisor> {
    let spec: Spec = read_json(&cdir.spec())?;
    let plan = Plan::from_spec(&spec, cfg.rootfs.clone())?;
    let filters = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(profile) => seccomp::compile(profile)?,
        None => Vec::new(),
    };
    let sigfd = SignalFd::with_flags(mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| EngineError::Host(format!("cannot create signalfd: {e}")))?;
    let _ = std::fs::remove_file(cdir.socket());
    let dir_fd = cdir
        .open_dir()
        .map_err(|e| EngineError::io("cannot open", &cdir.root, e))?;
    let listener = UnixListener::bind(cdir.socket_via(&dir_fd))
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| EngineError::io("cannot bind", &cdir.socket(), e))?;
    drop(dir_fd);
    let log = LogWriter::open(&cdir.log(), cfg.log_max_size, cfg.log_max_files)
        .map_err(|e| EngineError::io("cannot open", &cdir.log(), e))?;
    let pipe = || {
        pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| EngineError::Host(format!("cannot create pipe: {e}")))
    };
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let cgroup = cgroups::open(&cfg.cgroup)?;
    cgroup.create(&cfg.limits)?;
    let spawned = runtime::spawn(&plan, &filters, out_w, err_w, |pid| {
        cgroup.add_process(pid.as_raw())
    });
    let child = match spawned {
        Ok(pid) => pid,
        Err(e) => {
            let _ = cgroup.destroy();
            return Err(e);
        }
    };
    let state = StateFile {
        status: Status::Running,
        pid: child.as_raw(),
        shim_pid: std::process::id() as i32,
        started_at: Some(SystemTime::now().into()),
        ..Default::default()
    };
    cdir.write_state(&state)?;
    Ok(Supervisor {
        child,
        cgroup,
        sigfd,
        listener,
        pipes: vec![
            (out_r, "stdout", LineSplitter::default()),
            (err_r, "stderr", LineSplitter::default()),
        ],
        log: Some(log),
        clients: Vec::new(),
        exit_code: None,
    })
}

impl Supervisor {
    fn supervise(mut self, cdir: &ContainerDir) -> Result<()> {
        let mut drain_deadline: Option<Instant> = None;
        loop {
            if self.exit_code.is_some() {
                let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + DRAIN_GRACE);
                if self.pipes.is_empty() || Instant::now() >= deadline {
                    break;
                }
            }
            let timeout = if self.exit_code.is_some() {
                PollTimeout::from(100u16)
            } else {
                PollTimeout::NONE
            };
            let ready = {
                let mut fds: Vec<PollFd> = vec![
                    PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
                ];
                fds.extend(
                    self.pipes
                        .iter()
                        .map(|(fd, _, _)| PollFd::new(fd.as_fd(), PollFlags::POLLIN)),
                );
                fds.extend(
                    self.clients
                        .iter()
                        .map(|c| PollFd::new(c.stream.as_fd(), PollFlags::POLLIN)),
                );
                match poll(&mut fds, timeout) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(EngineError::Host(format!("poll failed: {e}"))),
                }
                fds.iter()
                    .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                    .collect::<Vec<bool>>()
            };
            let (npipes, nclients) = (self.pipes.len(), self.clients.len());
            if ready[0] {
                self.reap();
            }
            if ready[1] {
                self.accept();
            }
            // Pipes and clients, back to front so removals keep indices valid.
            // Clients accepted just now come after these and are polled next round.
            for i in (0..nclients).rev() {
                if ready[2 + npipes + i] {
                    self.serve_client(i);
                }
            }
            for i in (0..npipes).rev() {
                if ready[2 + i] {
                    self.read_pipe(i);
                }
            }
            if let Some(log) = self.log.as_mut() {
                let _ = log.flush();
            }
        }
        self.finish(cdir)
    }

    /// Collects the container's exit status once SIGCHLD says so.
    fn reap(&mut self) {
        while let Ok(Some(_)) = self.sigfd.read_signal() {}
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == self.child => {
                    self.exit_code = Some(code)
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == self.child => {
                    self.exit_code = Some(128 + sig as i32)
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let _ = stream.set_nonblocking(true);
                    self.clients.push(Client {
                        stream,
                        buf: Vec::new(),
                        waiting: false,
                    });
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }

    /// Reads requests: `kill <signo>` and `wait`, one per line.
    fn serve_client(&mut self, i: usize) {
        let mut chunk = [0u8; 512];
        let client = &mut self.clients[i];
        match client.stream.read(&mut chunk) {
            Ok(0) => {
                self.clients.remove(i);
                return;
            }
            Ok(n) => client.buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                return;
            }
            Err(_) => {
                self.clients.remove(i);
                return;
            }
        }
        while let Some(pos) = self.clients[i].buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.clients[i].buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line).trim().to_string();
            let reply = if line == "wait" {
                self.clients[i].waiting = true;
                None
            } else if let Some(sig) = line.strip_prefix("kill ") {
                Some(self.signal(sig))
            } else {
                Some(format!("err unknown request {line:?}\n"))
            };
            if let Some(reply) = reply {
                let _ = self.clients[i].stream.write_all(reply.as_bytes());
            }
        }
    }

    fn signal(&self, sig: &str) -> String {
        if self.exit_code.is_some() {
            return "err the container is not running\n".into();
        }
        let Some(sig) = sig
            .trim()
            .parse::<i32>()
            .ok()
            .and_then(|n| Signal::try_from(n).ok())
        else {
            return format!("err invalid signal {sig}\n");
        };
        match kill(self.child, sig) {
            Ok(()) => "ok\n".into(),
            Err(e) => format!("err cannot signal the container: {e}\n"),
        }
    }

    /// Copies what the container wrote into the log, line by line.
    fn read_pipe(&mut self, i: usize) {
        let mut buf = [0u8; 64 * 1024];
        let (fd, stream, splitter) = &mut self.pipes[i];
        let n = nix::unistd::read(fd.as_fd(), &mut buf).unwrap_or(0);
        let now = SystemTime::now();
        let lines = if n == 0 {
            splitter.finish().into_iter().collect()
        } else {
            splitter.push(&buf[..n])
        };
        if let Some(log) = self.log.as_mut() {
            for line in lines {
                // A full disk must not stop the container: its output is dropped, not blocked.
                let _ = log.write(stream, &line, now);
            }
        }
        if n == 0 {
            self.pipes.remove(i);
        }
    }

    /// Records the exit, answers waiters, removes the cgroup.
    fn finish(mut self, cdir: &ContainerDir) -> Result<()> {
        for i in (0..self.pipes.len()).rev() {
            let (_, stream, splitter) = &mut self.pipes[i];
            if let (Some(rest), Some(log)) = (splitter.finish(), self.log.as_mut()) {
                let _ = log.write(stream, &rest, SystemTime::now());
            }
        }
        if let Some(mut log) = self.log.take() {
            let _ = log.flush();
        }
        let code = self.exit_code.unwrap_or(255);
        let oom = self.cgroup.oom_killed();
        let mut state = cdir.read_state().unwrap_or_default();
        state.status = Status::Exited;
        state.exit_code = code;
        state.oom_killed = oom;
        state.finished_at = Some(SystemTime::now().into());
        cdir.write_state(&state)?;
        let reply = format!("exit {code} {}\n", u8::from(oom));
        for c in self.clients.iter_mut().filter(|c| c.waiting) {
            let _ = c.stream.set_nonblocking(false);
            let _ = c.stream.write_all(reply.as_bytes());
        }
        for pid in self.cgroup.procs() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if let Err(e) = self.cgroup.destroy() {
            tracing::warn!(error = %e, "cannot remove the container's cgroup");
        }
        let _ = std::fs::remove_file(cdir.socket());
        Ok(())
    }
}
