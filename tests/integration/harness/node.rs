//! TestNode: one real `shoal daemon` in its own network namespace, with its own state dir,
//! socket, cgroup parent and log file, driven through the real CLI.

use std::fs::{File, OpenOptions};
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::{cleanup, shoal_bin, wait_for};

/// How long a daemon may take to answer after start.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct TestNode {
    label: String,
    netns: String,
    addr: Ipv4Addr,
    dir: PathBuf,
    cgroup_parent: String,
    daemon: Option<Child>,
}

impl TestNode {
    pub(super) fn new(label: &str, netns: String, addr: Ipv4Addr, dir: PathBuf) -> TestNode {
        std::fs::create_dir_all(dir.join("state")).expect("create node dir");
        TestNode {
            label: label.to_string(),
            cgroup_parent: netns.clone(),
            netns,
            addr,
            dir,
            daemon: None,
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }
    pub fn netns(&self) -> &str {
        &self.netns
    }
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("shoal.sock")
    }
    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }
    /// The node's private scratch directory (holds state dir, socket and log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts `shoal daemon` in the node's namespace and waits until it answers.
    pub fn start(&mut self, extra: &[&str]) {
        assert!(
            self.daemon.is_none(),
            "{}: daemon already running",
            self.label
        );
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open daemon log");
        let state_dir = self.state_dir();
        let socket = self.socket();
        let listen = format!("{}:2377", self.addr);
        let mut args = vec![
            "daemon",
            "--state-dir",
            state_dir.to_str().unwrap(),
            "--socket",
            socket.to_str().unwrap(),
            "--listen-addr",
            &listen,
            "--cgroup-parent",
            &self.cgroup_parent,
        ];
        args.extend_from_slice(extra);
        let mut cmd = self.command(shoal_bin(), &args);
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .env(
                "RUST_LOG",
                std::env::var("SHOAL_TEST_LOG").unwrap_or("info".into()),
            )
            // Its own process group, so a Ctrl-C of the test run does not race our teardown.
            .process_group(0);
        let child = cmd.spawn().expect("spawn shoal daemon");
        self.daemon = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let label = self.label.clone();
        wait_for(&format!("daemon {label} to answer"), READY_TIMEOUT, || {
            if let Some(status) = self
                .daemon
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "daemon {label} exited during start-up ({status}); its log:\n{}",
                    self.daemon_log()
                );
            }
            self.shoal(&["version"]).status.success().then_some(())
        });
    }

    /// SIGTERM and wait: a clean shutdown. Returns the daemon's exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal_and_wait(nix::sys::signal::Signal::SIGTERM)
    }

    /// SIGKILL and wait: a crash.
    pub fn kill(&mut self) -> std::process::ExitStatus {
        self.signal_and_wait(nix::sys::signal::Signal::SIGKILL)
    }

    fn signal_and_wait(&mut self, sig: nix::sys::signal::Signal) -> std::process::ExitStatus {
        let mut child = self
            .daemon
            .take()
            .unwrap_or_else(|| panic!("{}: daemon is not running", self.label));
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, sig);
        let label = self.label.clone();
        wait_for(&format!("daemon {label} to exit"), READY_TIMEOUT, || {
            child.try_wait().ok().flatten()
        })
    }

    /// SIGKILL of the daemon and of everything the node runs (shims, containers): the machine
    /// is gone. Its namespace stays (for teardown).
    pub fn crash(&mut self) {
        self.kill();
        let owned = cleanup::Owned {
            netns: self.netns.clone(),
            dir: self.dir.clone(),
            cgroup_parent: self.cgroup_parent.clone(),
        };
        wait_for(
            &format!("every process of {} killed", self.label),
            READY_TIMEOUT,
            || (cleanup::kill_processes(&owned) == 0).then_some(()),
        );
    }

    pub fn is_running(&mut self) -> bool {
        match self.daemon.as_mut() {
            Some(c) => c.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    /// Runs the CLI against this node's socket, inside its namespace.
    pub fn shoal(&self, args: &[&str]) -> Output {
        let host = format!("unix://{}", self.socket().display());
        let mut full = vec!["-H", host.as_str()];
        full.extend_from_slice(args);
        self.command(shoal_bin(), &full)
            .stdin(Stdio::null())
            .output()
            .expect("run shoal CLI")
    }

    /// Runs the CLI inside this node's namespace without pointing it at this node's socket
    /// (e.g. `-H tcp://MANAGER:2377` from this machine).
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command(shoal_bin(), args)
            .stdin(Stdio::null())
            .output()
            .expect("run shoal CLI")
    }

    /// Runs the CLI and returns stdout; panics with everything useful if it fails.
    pub fn shoal_ok(&self, args: &[&str]) -> String {
        let out = self.shoal(args);
        if !out.status.success() {
            panic!(
                "`shoal {}` on {} failed ({}):\nstdout:\n{}\nstderr:\n{}\ndaemon log:\n{}",
                args.join(" "),
                self.label,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.daemon_log()
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the CLI expecting failure and returns stderr; panics if it succeeds.
    pub fn shoal_err(&self, args: &[&str]) -> String {
        let out = self.shoal(args);
        if out.status.success() {
            panic!(
                "`shoal {}` on {} succeeded but should have failed:\n{}",
                args.join(" "),
                self.label,
                String::from_utf8_lossy(&out.stdout)
            );
        }
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// A command that runs inside this node's network namespace (same mount namespace as the
    /// test, so mounts stay visible to every daemon and to teardown).
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let ns = File::open(format!("/run/netns/{}", self.netns)).expect("open netns");
        let mut cmd = Command::new(program);
        cmd.args(args);
        // SAFETY: setns is a plain syscall, async-signal-safe, touching no memory of the parent.
        unsafe {
            cmd.pre_exec(move || {
                nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)
            });
        }
        cmd
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    /// Everything the daemon wrote, across restarts.
    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- daemon log of {} ----\n{}",
                self.label,
                self.daemon_log()
            );
        }
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        cleanup::teardown(&cleanup::Owned {
            netns: self.netns.clone(),
            dir: self.dir.clone(),
            cgroup_parent: self.cgroup_parent.clone(),
        });
    }
}
