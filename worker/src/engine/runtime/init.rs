//! What runs inside the new namespaces before the container's program: the init half of the
//! runtime, executed by the cloned child (PID 1 of its PID namespace) in this order:
//!
//! ```text
//! stdio -> signals reset -> join/prepare netns (lo up) -> hostname -> "/" rprivate
//!  -> overlayfs root -> /proc /dev /sys ... + user mounts (targets resolved inside the root)
//!  -> devices -> pivot_root -> sysctls -> masked/read-only paths -> read-only root
//!  -> rlimits -> wait for the shim (cgroup joined) -> user lookup, cwd, PATH lookup
//!  -> bounding set -> setgroups/setgid/setuid -> capabilities -> no_new_privs -> seccomp -> exec
//! ```
//!
//! Any failure is written to the error pipe as `<exit code> <message>` and the child exits; the
//! shim turns it into a start error. A successful exec closes the pipe (O_CLOEXEC), which is how
//! the shim learns the program runs. The raw libc calls here have no nix wrapper (dup2 onto a
//! fixed number, sigaction reset, SIOCSIFFLAGS) and each carries a SAFETY note.

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::fd::RawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::libc;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::unistd::{Gid, Uid, chdir, pivot_root};
use seccompiler::BpfProgram;

use super::caps;
use super::paths::secure_join;
use super::plan::Plan;
use super::users;

/// A failure inside the init: the exit code Docker would use and what went wrong.
pub struct InitError {
    pub code: i32,
    pub message: String,
}

type InitResult<T = ()> = std::result::Result<T, InitError>;

fn fail(step: impl std::fmt::Display, err: impl std::fmt::Display) -> InitError {
    InitError {
        code: 125,
        message: format!("{step}: {err}"),
    }
}

/// Raw descriptors the child inherits from the shim.
#[derive(Debug, Clone, Copy)]
pub struct ChildFds {
    pub error_w: RawFd,
    pub go_r: RawFd,
    pub stdout_w: RawFd,
    pub stderr_w: RawFd,
    pub devnull: RawFd,
    pub netns: Option<RawFd>,
    /// The shim's ends, which the child must not hold open.
    pub parent_ends: [RawFd; 4],
}

/// The child's whole life: set up, then exec (never returns on success).
pub fn run(plan: &Plan, filters: &[BpfProgram], fds: ChildFds) -> i32 {
    let err = match setup_and_exec(plan, filters, fds) {
        Ok(()) => fail("exec", "returned"),
        Err(e) => e,
    };
    let mut pipe = std::mem::ManuallyDrop::new(
        // SAFETY: error_w is a valid pipe descriptor owned by this child; ManuallyDrop keeps the
        // File from closing it twice.
        unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds.error_w) },
    );
    let _ = write!(pipe, "{} {}", err.code, err.message);
    err.code
}

fn setup_and_exec(plan: &Plan, filters: &[BpfProgram], fds: ChildFds) -> InitResult {
    for fd in fds.parent_ends {
        let _ = nix::unistd::close(fd);
    }
    setup_stdio(&fds)?;
    reset_signals()?;
    // Die with the shim: a container must never run unsupervised.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| fail("set parent-death signal", e))?;
    if let Some(fd) = fds.netns {
        // SAFETY: fd is an open namespace file descriptor inherited from the shim.
        let ns = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| fail("join network namespace", e))?;
        let _ = nix::unistd::close(fd);
    } else if plan.new_netns {
        loopback_up().map_err(|e| fail("bring up loopback", e))?;
    }
    if let Some(h) = &plan.hostname {
        nix::unistd::sethostname(h).map_err(|e| fail("set hostname", e))?;
    }
    mount_rootfs(plan)?;
    let root = plan.rootfs.target.clone();
    for m in &plan.mounts {
        do_mount(&root, m)?;
    }
    setup_dev(&root, &plan.devices)?;
    enter_root(&root)?;
    for (k, v) in &plan.sysctls {
        let path = format!("/proc/sys/{}", k.replace('.', "/"));
        fs::write(&path, v).map_err(|e| fail(format!("set sysctl {k}={v}"), e))?;
    }
    for p in &plan.masked_paths {
        mask_path(p)?;
    }
    for p in &plan.readonly_paths {
        readonly_path(p)?;
    }
    if plan.readonly_root {
        remount_ro("/").map_err(|e| fail("make the root filesystem read-only", e))?;
    }
    for (res, soft, hard) in &plan.rlimits {
        nix::sys::resource::setrlimit(*res, *soft, *hard)
            .map_err(|e| fail(format!("set {res:?} to {soft}:{hard}"), e))?;
    }
    wait_for_go(fds.go_r)?;
    finish_and_exec(plan, filters)
}

fn setup_stdio(fds: &ChildFds) -> InitResult {
    for (from, to) in [(fds.devnull, 0), (fds.stdout_w, 1), (fds.stderr_w, 2)] {
        // SAFETY: both are valid descriptors; dup2 onto 0..2 replaces the shim's stdio.
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(fail("set up stdio", std::io::Error::last_os_error()));
        }
    }
    for fd in [fds.devnull, fds.stdout_w, fds.stderr_w] {
        if fd > 2 {
            let _ = nix::unistd::close(fd);
        }
    }
    Ok(())
}

/// Default dispositions and an empty mask: the shim blocks and ignores signals the container's
/// program must see normally (an ignored SIGPIPE would survive exec).
fn reset_signals() -> InitResult {
    use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, sigprocmask};
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing SIG_DFL runs no handler code, so no async-signal-safety rules apply.
        let _ = unsafe { nix::sys::signal::signal(sig, SigHandler::SigDfl) };
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(|e| fail("reset the signal mask", e))
}

/// `ip link set lo up` in a fresh network namespace, by ioctl.
fn loopback_up() -> std::io::Result<()> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    use std::os::fd::AsRawFd;
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the flags into req, a valid ifreq, from an open socket.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the union's flags member is the one SIOCGIFFLAGS just filled in.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads req, a valid ifreq, on an open socket.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Makes every mount private (nothing leaks to the host), then mounts the overlay root.
fn mount_rootfs(plan: &Plan) -> InitResult {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| fail("make mounts private", e))?;
    let r = &plan.rootfs;
    // lowerdir names are relative to links_dir, which keeps the option string short.
    chdir(&r.links_dir).map_err(|e| fail(format!("enter {}", r.links_dir.display()), e))?;
    mount(
        Some("overlay"),
        &r.target,
        Some("overlay"),
        MsFlags::MS_NODEV,
        Some(r.options().as_str()),
    )
    .map_err(|e| {
        let hint = if e == nix::errno::Errno::ENODEV {
            " (the kernel has no overlayfs: load the overlay module)"
        } else {
            ""
        };
        fail(
            format!("mount the overlayfs root at {}{hint}", r.target.display()),
            e,
        )
    })?;
    chdir("/").map_err(|e| fail("chdir /", e))
}

fn do_mount(root: &Path, m: &super::plan::MountStep) -> InitResult {
    let dest = secure_join(root, &m.destination);
    let step = || {
        format!(
            "mount {} on {}",
            if m.bind { &m.source } else { &m.fstype },
            m.destination
        )
    };
    if m.bind {
        let src_is_dir = fs::metadata(&m.source)
            .map_err(|e| fail(step(), e))?
            .is_dir();
        make_target(&dest, src_is_dir).map_err(|e| fail(step(), e))?;
        let base = MsFlags::MS_BIND | (m.flags & MsFlags::MS_REC);
        mount(
            Some(m.source.as_str()),
            &dest,
            None::<&str>,
            base,
            None::<&str>,
        )
        .map_err(|e| fail(step(), e))?;
        // Flags other than bind/rec only take effect on a remount of the bind.
        let extra = m.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
        if !extra.is_empty() {
            mount(
                None::<&str>,
                &dest,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra,
                None::<&str>,
            )
            .map_err(|e| fail(step(), e))?;
        }
    } else {
        make_target(&dest, true).map_err(|e| fail(step(), e))?;
        let data = (!m.data.is_empty()).then_some(m.data.as_str());
        mount(
            Some(m.source.as_str()),
            &dest,
            Some(m.fstype.as_str()),
            m.flags,
            data,
        )
        .map_err(|e| fail(step(), e))?;
    }
    if !m.propagation.is_empty() {
        mount(
            None::<&str>,
            &dest,
            None::<&str>,
            m.propagation,
            None::<&str>,
        )
        .map_err(|e| fail(step(), e))?;
    }
    Ok(())
}

/// Creates a mount point: a directory, or an empty file for a file bind mount.
fn make_target(dest: &Path, dir: bool) -> std::io::Result<()> {
    if dir {
        return fs::create_dir_all(dest);
    }
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    if fs::symlink_metadata(dest).is_err() {
        fs::File::create(dest)?;
    }
    Ok(())
}

/// Device nodes (bind-mounted from the host's, since /dev is nodev) and /dev's usual links.
fn setup_dev(root: &Path, devices: &[String]) -> InitResult {
    for dev in devices {
        let dest = secure_join(root, dev);
        make_target(&dest, false).map_err(|e| fail(format!("create {dev}"), e))?;
        mount(
            Some(dev.as_str()),
            &dest,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| fail(format!("bind {dev}"), e))?;
    }
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
        ("/dev/ptmx", "pts/ptmx"),
        ("/dev/core", "/proc/kcore"),
    ] {
        let dest = secure_join(root, link);
        if fs::symlink_metadata(&dest).is_err() {
            std::os::unix::fs::symlink(target, &dest)
                .map_err(|e| fail(format!("create {link}"), e))?;
        }
    }
    Ok(())
}

/// pivot_root into the new root and detach the old one.
fn enter_root(root: &Path) -> InitResult {
    chdir(root).map_err(|e| fail("enter the root filesystem", e))?;
    pivot_root(".", ".").map_err(|e| fail("pivot_root", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| fail("detach the old root", e))?;
    chdir("/").map_err(|e| fail("chdir /", e))
}

/// Hides a path: /dev/null over a file, an empty read-only tmpfs over a directory.
fn mask_path(p: &str) -> InitResult {
    let Ok(meta) = fs::metadata(p) else {
        return Ok(());
    };
    let res = if meta.is_dir() {
        mount(
            Some("tmpfs"),
            p,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
    } else {
        mount(
            Some("/dev/null"),
            p,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    res.map_err(|e| fail(format!("mask {p}"), e))
}

fn readonly_path(p: &str) -> InitResult {
    if fs::metadata(p).is_err() {
        return Ok(());
    }
    mount(
        Some(p),
        p,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| fail(format!("bind {p}"), e))?;
    remount_ro(p).map_err(|e| fail(format!("make {p} read-only"), e))
}

/// Re-applies a mount's flags plus read-only (a bind remount keeps nosuid/nodev/noexec only if
/// they are given again).
fn remount_ro(p: &str) -> nix::Result<()> {
    let st = nix::sys::statvfs::statvfs(p)?;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    use nix::sys::statvfs::FsFlags;
    for (f, m) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
    ] {
        if st.flags().contains(f) {
            flags |= m;
        }
    }
    mount(None::<&str>, p, None::<&str>, flags, None::<&str>)
}

/// Blocks until the shim has put us in our cgroup (one byte), or gave up (EOF).
fn wait_for_go(fd: RawFd) -> InitResult {
    let mut buf = [0u8; 1];
    let n = nix::unistd::read(
        // SAFETY: fd is the open read end of the go pipe.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        &mut buf,
    )
    .map_err(|e| fail("wait for the supervisor", e))?;
    let _ = nix::unistd::close(fd);
    if n == 1 {
        Ok(())
    } else {
        Err(fail("wait for the supervisor", "it gave up on the start"))
    }
}

/// The identity change and exec, after which nothing can be undone. Also what an exec into a
/// running container ends with (exec.rs).
pub(super) fn finish_and_exec(plan: &Plan, filters: &[BpfProgram]) -> InitResult {
    let user = users::resolve(
        &plan.user,
        &plan.groups,
        Path::new("/etc/passwd"),
        Path::new("/etc/group"),
    )
    .map_err(|m| InitError {
        code: 125,
        message: m,
    })?;
    let mut env = plan.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    if fs::metadata(&plan.cwd).is_err() {
        fs::create_dir_all(&plan.cwd)
            .map_err(|e| fail(format!("create working directory {}", plan.cwd), e))?;
    }
    let program = lookup_program(plan, &env)?;
    caps::drop_bounding(plan.caps, caps::last_cap()).map_err(|e| fail("drop capabilities", e))?;
    nix::sys::prctl::set_keepcaps(true).map_err(|e| fail("keep capabilities", e))?;
    let gids: Vec<Gid> = user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&gids).map_err(|e| fail("set groups", e))?;
    let gid = Gid::from_raw(user.gid);
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| fail(format!("set gid {}", user.gid), e))?;
    let uid = Uid::from_raw(user.uid);
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| fail(format!("set uid {}", user.uid), e))?;
    // A change of user clears the parent-death signal: set it again, or a container running as
    // non-root would survive its supervisor (or an exec its nsexec).
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| fail("set parent-death signal", e))?;
    caps::set_process_caps(plan.caps).map_err(|e| fail("set capabilities", e))?;
    chdir(plan.cwd.as_str())
        .map_err(|e| fail(format!("chdir to working directory {}", plan.cwd), e))?;
    mark_fds_cloexec();
    if plan.no_new_privs {
        nix::sys::prctl::set_no_new_privs().map_err(|e| fail("set no_new_privs", e))?;
    }
    for f in filters {
        seccompiler::apply_filter(f).map_err(|e| fail("install the seccomp filter", e))?;
    }
    let env_c: Vec<CString> = env
        .iter()
        .filter_map(|e| CString::new(e.as_str()).ok())
        .collect();
    let err = nix::unistd::execve(&program, &plan.args, &env_c).unwrap_err();
    let arg0 = plan.args[0].to_string_lossy();
    Err(match err {
        nix::errno::Errno::ENOENT => InitError {
            code: 127,
            message: format!("exec {arg0:?}: no such file or directory"),
        },
        nix::errno::Errno::EACCES | nix::errno::Errno::EPERM => InitError {
            code: 126,
            message: format!("exec {arg0:?}: permission denied"),
        },
        e => InitError {
            code: 126,
            message: format!("exec {arg0:?}: {e}"),
        },
    })
}

/// The program to exec: as given when it has a slash, else the first match in $PATH.
fn lookup_program(plan: &Plan, env: &[String]) -> InitResult<CString> {
    let arg0 = plan.args[0].to_string_lossy().into_owned();
    if arg0.contains('/') {
        return Ok(plan.args[0].clone());
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = PathBuf::from(dir).join(&arg0);
        if let Ok(m) = fs::metadata(&candidate)
            && m.is_file()
            && m.permissions().mode() & 0o111 != 0
        {
            return CString::new(candidate.to_string_lossy().into_owned())
                .map_err(|_| fail("exec", "path contains a NUL byte"));
        }
    }
    Err(InitError {
        code: 127,
        message: format!("exec {arg0:?}: executable file not found in $PATH"),
    })
}

/// Nothing but stdio (and the error pipe, already close-on-exec) may reach the program.
fn mark_fds_cloexec() {
    let Ok(dir) = fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD on a descriptor number only changes its flag (or fails with EBADF for
        // the directory's own, already closed descriptor).
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
}
