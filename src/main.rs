//! shoal: the one binary of Shoal, both the CLI and the daemon (`shoal daemon`).
//!
//! The CLI (src/cli) parses commands with clap and talks gRPC to a daemon over its Unix socket
//! (or, later, mutual TLS). The daemon (src/daemon) wires the roles a node plays: the local API,
//! the worker's engine, and, once the node is in a cluster, the manager.

#![forbid(unsafe_code)]

mod cli;
mod daemon;
mod logging;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // The container supervisor runs before anything else, in particular before a tokio runtime
    // starts threads: it clones the container process, which needs a single-threaded parent.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("shim") {
        return shim(&args[2..]);
    }
    // Likewise the exec helper: it joins a container's mount namespace, which only a
    // single-threaded process may do, and forks into its pid namespace.
    if args.get(1).map(String::as_str) == Some("nsexec") {
        return nsexec(&args[2..]);
    }
    let cli = cli::Cli::parse();
    // A CLI command is one call or stream: one thread serves it and starts sooner (it is on the
    // path of every `container run`); the daemon gets the multi-threaded runtime.
    let mut builder = if matches!(cli.command, cli::Command::Daemon(_)) {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {}", cli::render_error(&e));
            ExitCode::FAILURE
        }
    }
}

/// `shoal shim <container-dir>` (hidden; the daemon runs it): one container's supervisor.
fn shim(args: &[String]) -> ExitCode {
    let Some(dir) = args.first() else {
        eprintln!("usage: shoal shim <container-dir> (run by the daemon, not by hand)");
        return ExitCode::from(2);
    };
    // Its stderr is the container's shim.log.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .init();
    match shoal_worker::engine::shim::run(std::path::Path::new(dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shoal shim {dir}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `shoal nsexec <container-dir> <request>` (hidden; the engine runs it): one command inside a
/// running container; exits with the command's status.
fn nsexec(args: &[String]) -> ExitCode {
    let [dir, request] = args else {
        eprintln!("usage: shoal nsexec <container-dir> <request> (run by the daemon, not by hand)");
        return ExitCode::from(2);
    };
    let code = shoal_worker::engine::nsexec::run(std::path::Path::new(dir), request);
    ExitCode::from(u8::try_from(code).unwrap_or(255))
}
