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
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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
