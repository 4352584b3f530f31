//! `shoal version`: client and daemon versions, in the two-section layout of `docker version`.

use anyhow::Result;
use shoal_proto::VersionRequest;
use shoal_proto::daemon_client::DaemonClient;

use super::Host;

#[derive(Debug, clap::Args)]
pub struct VersionArgs {}

pub async fn run(host: &Host, _: VersionArgs) -> Result<()> {
    let client = crate::daemon::version_response();
    println!("Client:");
    print_version(&client);
    println!();
    let channel = super::client::connect(host).await?;
    let server = DaemonClient::new(channel)
        .version(VersionRequest {})
        .await?
        .into_inner();
    println!("Server:");
    print_version(&server);
    Ok(())
}

fn print_version(v: &shoal_proto::VersionResponse) {
    println!(" Version:      {}", v.version);
    println!(" API version:  {}", v.api_version);
    if !v.git_commit.is_empty() {
        println!(" Git commit:   {}", v.git_commit);
    }
    println!(" OS/Arch:      {}/{}", v.os, v.arch);
}
