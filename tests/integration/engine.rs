//! The container engine for real: images imported through the CLI, containers run by the
//! built-in runtime under a real daemon (as root), isolation checked from inside, limits hit,
//! hostile archives refused, and a daemon crash survived. Every test ends by checking that its
//! containers left no process, mount or cgroup behind.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::harness::{TestNet, TestNode, wait_for};
use crate::images::{self, Compression, File, images};

const LONG: Duration = Duration::from_secs(60);

/// A node with the OCI and docker-save busybox images imported.
fn node_with_images(net: &TestNet, label: &str) -> TestNode {
    let mut node = net.node(label);
    node.start(&[]);
    let imgs = images();
    let out = node.shoal_ok(&["image", "import", imgs.oci.to_str().unwrap()]);
    assert!(out.contains("Loaded image: test/busybox:oci"), "{out}");
    let out = node.shoal_ok(&["image", "import", imgs.docker.to_str().unwrap()]);
    assert!(out.contains("Loaded image: test/busybox:docker"), "{out}");
    node
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `container run` and its output; panics with everything if it did not exit with `code`.
fn run_expect(node: &TestNode, args: &[&str], code: i32) -> Output {
    let mut full = vec!["container", "run"];
    full.extend_from_slice(args);
    let out = node.shoal(&full);
    assert_eq!(
        out.status.code(),
        Some(code),
        "`shoal {}`: stdout:\n{}\nstderr:\n{}\ndaemon log:\n{}",
        full.join(" "),
        text(&out.stdout),
        text(&out.stderr),
        node.daemon_log()
    );
    out
}

/// Processes (other than the daemon) whose command line names the node's state dir: shims.
fn shim_pids(node: &TestNode) -> Vec<i32> {
    let needle = node.state_dir().display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = text(&cmd);
            cmd.contains(&needle) && cmd.contains("shim")
        })
        .collect()
}

/// Mount points under a directory, from our mountinfo.
fn mounts_under(dir: &Path) -> Vec<String> {
    let d = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(String::from))
        .filter(|m| m.starts_with(&d))
        .collect()
}

/// Container cgroups (children of the node's cgroup parent) in any hierarchy.
fn container_cgroups(node: &TestNode) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let roots = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            vec![std::path::PathBuf::from("/sys/fs/cgroup")]
        } else {
            vec![entry.path()]
        };
        for root in roots {
            let parent = root.join(node.cgroup_parent());
            for c in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
                if c.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    out.push(c.path().display().to_string());
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Removes every container and checks nothing of them remains.
fn remove_all_and_assert_clean(node: &TestNode) {
    let ids = node.shoal_ok(&["container", "ps", "-aq"]);
    for id in ids.split_whitespace() {
        node.shoal_ok(&["container", "rm", "-f", id]);
    }
    assert_eq!(node.shoal_ok(&["container", "ps", "-aq"]).trim(), "");
    wait_for("container supervisors to exit", LONG, || {
        shim_pids(node).is_empty().then_some(())
    });
    assert_eq!(
        mounts_under(node.dir()),
        Vec::<String>::new(),
        "mounts left behind"
    );
    assert_eq!(
        container_cgroups(node),
        Vec::<String>::new(),
        "cgroups left behind"
    );
    let trash = node.state_dir().join("engine/trash");
    wait_for("removed containers' files to be deleted", LONG, || {
        std::fs::read_dir(&trash)
            .unwrap()
            .next()
            .is_none()
            .then_some(())
    });
    let cdir = node.state_dir().join("engine/containers");
    let left: Vec<_> = std::fs::read_dir(&cdir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "container directories left: {left:?}");
}

#[test]
fn engine_runs_containers_with_output_and_exit_codes() {
    let net = TestNet::new("engine_run");
    let node = node_with_images(&net, "n1");

    let ls = node.shoal_ok(&["image", "ls"]);
    let header = ls.lines().next().unwrap();
    for col in ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"] {
        assert!(header.contains(col), "{ls}");
    }
    assert!(
        ls.contains("test/busybox") && ls.contains("oci") && ls.contains("docker"),
        "{ls}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&node.shoal_ok(&["image", "ls", "--format", "json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2, "{json}");
    let inspect: serde_json::Value =
        serde_json::from_str(&node.shoal_ok(&["image", "inspect", "test/busybox:oci"])).unwrap();
    assert_eq!(inspect[0]["layers"].as_array().unwrap().len(), 2);
    assert_eq!(inspect[0]["config"]["cmd"][0], "sh");

    // Both archive formats run; output streams back and the exit code is the container's.
    for image in ["test/busybox:oci", "test/busybox:docker"] {
        let out = run_expect(&node, &["--rm", image, "echo", "hello"], 0);
        assert_eq!(text(&out.stdout), "hello\n");
    }
    let out = run_expect(
        &node,
        &[
            "--rm",
            "test/busybox:oci",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 7",
        ],
        7,
    );
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err"), "{}", text(&out.stderr));
    // Image defaults: the image's Env and its second layer.
    let out = run_expect(
        &node,
        &[
            "--rm",
            "test/busybox:oci",
            "sh",
            "-c",
            "echo $FROM_IMAGE; cat /etc/motd",
        ],
        0,
    );
    assert_eq!(text(&out.stdout), "yes\nwelcome\n");
    // A missing program is exit 127, as Docker.
    let out = run_expect(&node, &["--rm", "test/busybox:oci", "no-such-program"], 127);
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );

    // Detached, killed: 137; ps, logs and inspect tell the story.
    let id = node.shoal_ok(&[
        "container",
        "run",
        "-d",
        "--name",
        "sleeper",
        "test/busybox:oci",
        "sh",
        "-c",
        "echo started; sleep 1000",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");
    wait_for("the sleeper's first line", LONG, || {
        node.shoal_ok(&["container", "logs", "sleeper"])
            .contains("started")
            .then_some(())
    });
    let ps = node.shoal_ok(&["container", "ps"]);
    for col in [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ] {
        assert!(ps.lines().next().unwrap().contains(col), "{ps}");
    }
    assert!(ps.contains("sleeper") && ps.contains("Up "), "{ps}");
    node.shoal_ok(&["container", "kill", "sleeper"]);
    assert_eq!(
        node.shoal_ok(&["container", "wait", "sleeper"]).trim(),
        "137"
    );
    let ps = node.shoal_ok(&["container", "ps", "-a"]);
    assert!(ps.contains("Exited (137)"), "{ps}");
    let info: serde_json::Value =
        serde_json::from_str(&node.shoal_ok(&["container", "inspect", "sleeper"])).unwrap();
    assert_eq!(info[0]["state"]["exit_code"], 137);
    assert_eq!(info[0]["state"]["status"], "exited");
    assert_eq!(
        node.shoal_ok(&["container", "logs", "--tail", "1", &id[..12]]),
        "started\n"
    );

    // stop: the stop signal (TERM, which a shell as PID 1 ignores), then KILL after the grace.
    node.shoal_ok(&[
        "container",
        "run",
        "-d",
        "--name",
        "stubborn",
        "--stop-timeout",
        "1",
        "test/busybox:oci",
        "sleep",
        "1000",
    ]);
    node.shoal_ok(&["container", "stop", "stubborn"]);
    assert_eq!(
        node.shoal_ok(&["container", "wait", "stubborn"]).trim(),
        "137"
    );
    // -d --rm: the engine removes it once it exits.
    node.shoal_ok(&[
        "container",
        "run",
        "-d",
        "--rm",
        "--name",
        "ephemeral",
        "test/busybox:oci",
        "true",
    ]);
    wait_for("the --rm container to be removed", LONG, || {
        (!node
            .shoal_ok(&["container", "ps", "-a"])
            .contains("ephemeral"))
        .then_some(())
    });
    // A container using an image keeps it.
    let err = node.shoal_err(&["image", "rm", "test/busybox:oci"]);
    assert!(err.contains("used by container"), "{err}");
    let info = node.shoal_ok(&["info"]);
    assert!(
        info.contains("Storage Driver:  overlayfs") && info.contains("Images:          2"),
        "{info}"
    );

    remove_all_and_assert_clean(&node);
    node.shoal_ok(&["image", "rm", "test/busybox:oci"]);
    assert!(!node.shoal_ok(&["image", "ls"]).contains("oci"));
}

#[test]
fn engine_isolates_containers_like_docker() {
    let net = TestNet::new("engine_iso");
    let node = node_with_images(&net, "n1");
    let img = "test/busybox:oci";
    let sh = |script: &str, extra: &[&str]| -> String {
        let mut args: Vec<&str> = vec!["--rm"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[img, "sh", "-c", script]);
        text(&run_expect(&node, &args, 0).stdout)
    };
    // The process is PID 1 of its own PID namespace, and sees only its own processes.
    let procs = sh(
        "echo $$; tr '\\0' ' ' < /proc/1/cmdline; echo; ls -d /proc/[0-9]*",
        &[],
    );
    let mut lines = procs.lines();
    assert_eq!(lines.next(), Some("1"), "{procs}");
    assert!(lines.next().unwrap().starts_with("sh -c"), "{procs}");
    // Only the shell and its `ls` (PIDs 1 and 2 of the namespace) exist: no host process.
    assert!(lines.count() <= 3, "{procs}");
    assert_eq!(sh("hostname", &["--hostname", "box1"]), "box1\n");
    // A fresh network namespace holds only loopback, and it is up.
    assert_eq!(sh("ls /sys/class/net", &[]), "lo\n");
    assert!(
        sh(
            "cat /sys/class/net/lo/operstate; ping -c1 -W2 127.0.0.1 >/dev/null && echo ping-ok",
            &[]
        )
        .contains("ping-ok")
    );
    // Masked paths read as /dev/null. /proc/kcore is masked whenever the kernel has it; this
    // kernel may not (CONFIG_PROC_KCORE), in which case the container has none either.
    let masked = sh(
        "for p in /proc/kcore /proc/keys /proc/timer_list; do [ -e $p ] && stat -c '%n %t:%T %s' $p; done",
        &[],
    );
    if Path::new("/proc/kcore").exists() {
        assert!(masked.contains("/proc/kcore 1:3 0"), "{masked}");
    } else {
        assert!(!masked.contains("/proc/kcore"), "{masked}");
        eprintln!(
            "note: this kernel has no /proc/kcore; checked /proc/keys and /proc/timer_list instead"
        );
    }
    assert!(masked.contains("/proc/keys 1:3 0"), "{masked}");
    // Docker's default capability set, nothing more.
    assert_eq!(
        sh("grep CapEff /proc/self/status", &[]),
        "CapEff:\t00000000a80425fb\n"
    );
    assert_eq!(
        sh("grep CapBnd /proc/self/status", &[]),
        "CapBnd:\t00000000a80425fb\n"
    );
    assert_eq!(
        sh("grep NoNewPrivs /proc/self/status", &[]),
        "NoNewPrivs:\t1\n"
    );
    assert_eq!(sh("grep Seccomp: /proc/self/status", &[]), "Seccomp:\t2\n");
    // Mounting fails (no CAP_SYS_ADMIN, and seccomp); so does a new user namespace.
    assert_eq!(
        sh("mount -t tmpfs none /mnt 2>/dev/null; echo $?", &[]),
        "1\n"
    );
    assert_eq!(sh("unshare -U true 2>/dev/null; echo $?", &[]), "1\n");
    // /proc/sys and /sys are read-only; a mknod'ed device cannot be opened (nodev).
    assert_eq!(
        sh("echo 1 > /proc/sys/kernel/ostype 2>/dev/null; echo $?", &[]),
        "1\n"
    );
    assert_eq!(
        sh(
            "mknod /tmp/null2 c 1 3 && cat /tmp/null2 2>/dev/null; echo $?",
            &[]
        ),
        "1\n"
    );
    // User, groups, working directory, environment.
    assert_eq!(
        sh(
            "id -u; id -g; pwd; echo $HOME",
            &["-u", "nobody", "-w", "/tmp"]
        ),
        "65534\n65534\n/tmp\n/nonexistent\n"
    );
    assert_eq!(
        sh("id -u; grep CapEff /proc/self/status", &["-u", "1234:5"]),
        "1234\nCapEff:\t0000000000000000\n"
    );
    assert_eq!(sh("echo $A-$B", &["-e", "A=1", "-e", "B=2"]), "1-2\n");
    // Read-only root, bind mounts (ro and rw), tmpfs.
    let host_dir = node.dir().join("bind");
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("from-host"), "hi\n").unwrap();
    let vol_rw = format!("{}:/data", host_dir.display());
    let vol_ro = format!("{}:/ro:ro", host_dir.display());
    let out = sh(
        "touch /x 2>/dev/null || echo root-ro; cat /data/from-host; echo w > /data/from-container; \
         touch /ro/x 2>/dev/null || echo bind-ro; touch /scratch/x && echo tmpfs-rw",
        &[
            "--read-only",
            "-v",
            &vol_rw,
            "-v",
            &vol_ro,
            "--tmpfs",
            "/scratch",
        ],
    );
    assert_eq!(out, "root-ro\nhi\nbind-ro\ntmpfs-rw\n");
    assert_eq!(
        std::fs::read_to_string(host_dir.join("from-container")).unwrap(),
        "w\n"
    );
    // rlimits.
    assert_eq!(sh("ulimit -n", &["--ulimit", "nofile=256:512"]), "256\n");
    // The container's writes stay in its own upper layer: the next one starts clean.
    sh("echo scribble > /etc/motd", &[]);
    assert_eq!(sh("cat /etc/motd", &[]), "welcome\n");
    remove_all_and_assert_clean(&node);
}

#[test]
fn engine_memory_limit_ends_a_hog_with_oom_reported() {
    let net = TestNet::new("engine_oom");
    let node = node_with_images(&net, "n1");
    // tail buffers /dev/zero looking for a newline, growing until the limit.
    run_expect(
        &node,
        &[
            "--name",
            "hog",
            "--memory",
            "16m",
            "test/busybox:oci",
            "tail",
            "/dev/zero",
        ],
        137,
    );
    let info: serde_json::Value =
        serde_json::from_str(&node.shoal_ok(&["container", "inspect", "hog"])).unwrap();
    assert_eq!(info[0]["state"]["oom_killed"], true, "{info}");
    assert_eq!(info[0]["state"]["exit_code"], 137);
    // A container under its limit is not reported.
    run_expect(
        &node,
        &[
            "--name",
            "fine",
            "--memory",
            "64m",
            "test/busybox:oci",
            "true",
        ],
        0,
    );
    let info: serde_json::Value =
        serde_json::from_str(&node.shoal_ok(&["container", "inspect", "fine"])).unwrap();
    assert_eq!(info[0]["state"]["oom_killed"], false);
    remove_all_and_assert_clean(&node);
}

#[test]
fn engine_pids_limit_holds() {
    let net = TestNet::new("engine_pids");
    let node = node_with_images(&net, "n1");
    // A child shell starts 20 sleepers and dies at the first fork the limit refuses; the
    // parent then counts the processes with a glob (no fork needed).
    let script = "sh -c 'for i in $(seq 1 20); do sleep 30 & done' 2>/dev/null; set -- /proc/[0-9]*; echo $#";
    let count = |limit: &[&str]| -> usize {
        let mut args = vec!["--rm"];
        args.extend_from_slice(limit);
        args.extend_from_slice(&["test/busybox:oci", "sh", "-c", script]);
        text(&run_expect(&node, &args, 0).stdout)
            .trim()
            .parse()
            .unwrap()
    };
    let limited = count(&["--pids-limit", "8"]);
    assert!(
        (2..=8).contains(&limited),
        "{limited} processes under a limit of 8"
    );
    // Without the limit all 20 start: the limit, not the script, stopped them.
    assert_eq!(count(&[]), 21);
    remove_all_and_assert_clean(&node);
}

#[test]
fn engine_three_layer_whiteouts_hide_files() {
    let net = TestNet::new("engine_layers");
    let node = node_with_images(&net, "n1");
    node.shoal_ok(&["image", "import", images().three_layers.to_str().unwrap()]);
    let out = run_expect(
        &node,
        &[
            "--rm",
            "test/layers:3",
            "sh",
            "-c",
            "ls /data; echo --; ls /opq",
        ],
        0,
    );
    assert_eq!(text(&out.stdout), "keep\n--\nnew\n");
    // Layers are shared: the base busybox layer is stored once for both images.
    let layers = std::fs::read_dir(node.state_dir().join("engine/images/layers"))
        .unwrap()
        .count();
    assert_eq!(layers, 4, "base + motd + two more, each once");
    remove_all_and_assert_clean(&node);
}

/// Everything in the image store, to compare before and after a refused import.
fn store_listing(node: &TestNode) -> Vec<String> {
    let root = node.state_dir().join("engine/images");
    let mut out = Vec::new();
    for sub in ["blobs/sha256", "layers", "images", "tmp"] {
        for e in std::fs::read_dir(root.join(sub)).unwrap().flatten() {
            out.push(format!("{sub}/{}", e.file_name().to_string_lossy()));
        }
    }
    out.push(std::fs::read_to_string(root.join("repositories.json")).unwrap_or_default());
    out.sort();
    out
}

#[test]
fn engine_refuses_malicious_archives_and_leaves_nothing_behind() {
    let net = TestNet::new("engine_evil");
    let node = node_with_images(&net, "n1");
    let dir = images().dir.join(format!("evil-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Canaries outside the store that no archive may create.
    let outside = dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let canary = outside.join("pwned");
    let extra = serde_json::json!({"Cmd": ["sh"]});
    let base = images::busybox_layer();
    let evil = |entries: &[(&str, File)]| {
        images::oci_archive(
            &[(images::layer(entries), Compression::Gzip)],
            Some("evil/x:1"),
            &extra,
        )
    };
    let rel_escape = format!("../../../../../../..{}", canary.display());
    let good = images::oci_archive(
        &[(base.clone(), Compression::Gzip)],
        Some("evil/ok:1"),
        &extra,
    );
    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", good[..good.len() / 2].to_vec(), "truncated"),
        (
            "dotdot entry",
            evil(&[("../../escape", File::Data(b"x"))]),
            "'..'",
        ),
        (
            "absolute entry",
            evil(&[("/tmp/abs-escape", File::Data(b"x"))]),
            "absolute",
        ),
        (
            "escaping symlink",
            evil(&[("link", File::Symlink(&rel_escape))]),
            "escapes the layer",
        ),
        (
            "write through symlink",
            evil(&[
                ("link", File::Symlink(outside.to_str().unwrap())),
                ("link/pwned", File::Data(b"x")),
            ]),
            "goes through symlink",
        ),
        (
            "escaping hardlink",
            evil(&[("hl", File::Hardlink("../../../../etc/passwd"))]),
            "hard link",
        ),
        (
            "not an archive",
            b"this is not a tar file at all, just text".repeat(20),
            "not a valid tar archive",
        ),
    ];
    // A layer whose content does not match the config's diff ID.
    let cfg = images::config_json(&[images::layer(&[("a", File::Data(b"1"))])], &extra);
    cases.push((
        "diff id mismatch",
        images::oci_archive_with(
            &[(images::layer(&[("a", File::Data(b"2"))]), Compression::Gzip)],
            &cfg,
            Some("evil/x:1"),
        ),
        "digest mismatch",
    ));
    // A blob tampered with after its digest was taken.
    let mut tampered = good.clone();
    let at = tampered
        .windows(4)
        .position(|w| w == b"\x1f\x8b\x08\x00")
        .unwrap()
        + 100;
    tampered[at] ^= 0xff;
    cases.push(("tampered blob", tampered, "corrupt"));
    // docker save whose layer differs from the config's diff ID.
    let dcfg = images::config_json(std::slice::from_ref(&base), &extra);
    cases.push((
        "docker diff id mismatch",
        images::docker_archive_with(
            &[images::layer(&[("a", File::Data(b"2"))])],
            &dcfg,
            "evil/d:1",
        ),
        "digest mismatch",
    ));
    let before = store_listing(&node);
    for (what, data, needle) in cases {
        let path = dir.join(format!("{}.tar", what.replace(' ', "-")));
        std::fs::write(&path, data).unwrap();
        let err = node.shoal_err(&["image", "import", path.to_str().unwrap()]);
        assert!(
            err.contains(needle),
            "{what}: expected {needle:?} in: {err}"
        );
        assert_eq!(
            store_listing(&node),
            before,
            "{what} left something in the store"
        );
        assert!(
            !canary.exists() && !Path::new("/tmp/abs-escape").exists(),
            "{what} wrote outside"
        );
        assert!(
            std::fs::read_dir(&outside).unwrap().next().is_none(),
            "{what} wrote outside"
        );
    }
    // Device nodes are skipped (with a warning), not refused: the runtime provides /dev.
    let dev = images::oci_archive(
        &[
            (base, Compression::None),
            (
                images::layer(&[("dev/", File::Dir), ("dev/sda", File::CharDevice(8, 0))]),
                Compression::Gzip,
            ),
        ],
        Some("evil/dev:1"),
        &extra,
    );
    let path = dir.join("device.tar");
    std::fs::write(&path, dev).unwrap();
    let out = node.shoal(&["image", "import", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("skipped device node /dev/sda"),
        "{}",
        text(&out.stderr)
    );
    let out = run_expect(
        &node,
        &["--rm", "evil/dev:1", "sh", "-c", "ls /dev/sda 2>&1"],
        1,
    );
    assert!(
        text(&out.stdout).contains("No such file"),
        "{}",
        text(&out.stdout)
    );
    std::fs::remove_dir_all(&dir).unwrap();
    remove_all_and_assert_clean(&node);
}

#[test]
fn engine_refuses_bad_input_with_clear_errors() {
    let net = TestNet::new("engine_bad");
    let node = node_with_images(&net, "n1");
    let cases: &[(&[&str], &str)] = &[
        (
            &["container", "run", "no/such:image", "true"],
            "no such image",
        ),
        (
            &[
                "container",
                "run",
                "--memory",
                "1k",
                "test/busybox:oci",
                "true",
            ],
            "minimum is 6MiB",
        ),
        (
            &[
                "container",
                "run",
                "--cpus",
                "64",
                "test/busybox:oci",
                "true",
            ],
            "out of range",
        ),
        (
            &[
                "container",
                "run",
                "--pids-limit",
                "-5",
                "test/busybox:oci",
                "true",
            ],
            "pids limit",
        ),
        (
            &[
                "container",
                "run",
                "-v",
                "/no/such/dir:/x",
                "test/busybox:oci",
                "true",
            ],
            "does not exist",
        ),
        (
            &[
                "container",
                "run",
                "--name",
                "bad name",
                "test/busybox:oci",
                "true",
            ],
            "invalid container name",
        ),
        (
            &[
                "container",
                "run",
                "-u",
                "ghost",
                "test/busybox:oci",
                "true",
            ],
            "unable to find user ghost",
        ),
        (
            &["container", "run", "test/busybox:oci", "/etc/passwd"],
            "permission denied",
        ),
        (&["container", "kill", "nosuch"], "no such container"),
        (&["image", "rm", "nosuch:tag"], "no such image"),
        (
            &["image", "import", "/no/such/file.tar"],
            "cannot read /no/such/file.tar",
        ),
    ];
    for (args, needle) in cases {
        let out = node.shoal(args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = text(&out.stderr);
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // Start failures carry Docker's exit codes: 125 engine refusal, 126 cannot invoke.
    assert_eq!(
        node.shoal(&["container", "run", "no/such:image", "true"])
            .status
            .code(),
        Some(125)
    );
    assert_eq!(
        node.shoal(&[
            "container",
            "run",
            "--rm",
            "test/busybox:oci",
            "/etc/passwd"
        ])
        .status
        .code(),
        Some(126)
    );
    remove_all_and_assert_clean(&node);
}

#[test]
fn engine_containers_survive_a_daemon_crash_and_are_readopted() {
    let net = TestNet::new("engine_crash");
    let mut node = node_with_images(&net, "n1");
    let ctl = node.dir().join("ctl");
    std::fs::create_dir_all(&ctl).unwrap();
    let vol = format!("{}:/ctl", ctl.display());
    // Two containers that exit when told to (a file appears), with distinct codes.
    let script = |code: u8| {
        format!("echo up; while [ ! -e /ctl/go{code} ]; do sleep 0.05; done; exit {code}")
    };
    node.shoal_ok(&[
        "container",
        "run",
        "-d",
        "--name",
        "ca",
        "-v",
        &vol,
        "test/busybox:oci",
        "sh",
        "-c",
        &script(7),
    ]);
    node.shoal_ok(&[
        "container",
        "run",
        "-d",
        "--name",
        "cb",
        "-v",
        &vol,
        "test/busybox:oci",
        "sh",
        "-c",
        &script(9),
    ]);
    let pid_of = |node: &TestNode, name: &str| -> i64 {
        let info: serde_json::Value =
            serde_json::from_str(&node.shoal_ok(&["container", "inspect", name])).unwrap();
        info[0]["state"]["pid"].as_i64().unwrap()
    };
    let pid_a = pid_of(&node, "ca");
    assert!(pid_a > 0);

    node.kill();
    // The containers run on without the daemon; one of them ends while it is away.
    assert!(
        Path::new(&format!("/proc/{pid_a}")).exists(),
        "container a died with the daemon"
    );
    std::fs::write(ctl.join("go9"), "").unwrap();
    wait_for("container b to end while the daemon is down", LONG, || {
        let state = std::fs::read_to_string(
            std::fs::read_dir(node.state_dir().join("engine/containers"))
                .unwrap()
                .flatten()
                .map(|e| e.path().join("state.json"))
                .find(|p| {
                    std::fs::read_to_string(p.with_file_name("container.json"))
                        .unwrap_or_default()
                        .contains("\"name\": \"cb\"")
                })
                .unwrap(),
        )
        .unwrap();
        state.contains("\"exited\"").then_some(())
    });

    node.start(&[]);
    // a is re-adopted as running with the same process; b's exit was learned from its record.
    let ps = node.shoal_ok(&["container", "ps"]);
    assert!(
        ps.lines().any(|l| l.ends_with(" ca") && l.contains("Up ")),
        "{ps}"
    );
    assert_eq!(pid_of(&node, "ca"), pid_a);
    assert_eq!(node.shoal_ok(&["container", "wait", "cb"]).trim(), "9");
    std::fs::write(ctl.join("go7"), "").unwrap();
    assert_eq!(node.shoal_ok(&["container", "wait", "ca"]).trim(), "7");
    let logs = node.shoal_ok(&["container", "logs", "ca"]);
    assert_eq!(logs, "up\n");
    assert!(
        node.shoal_ok(&["container", "ps", "-a"])
            .contains("Exited (7)")
    );
    remove_all_and_assert_clean(&node);
}
