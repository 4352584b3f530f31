//! `shoal service logs SERVICE|TASK`: every line of every task of a service, from whichever node
//! ran it, each prefixed with the task and node as `docker service logs` does
//! (`web.2.k2j4h5g6f7d8@node-1    | line`).

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use clap::Args;
use shoal_proto::control_client::ControlClient;
use shoal_proto::logs_client::LogsClient;
use shoal_proto::{
    GetNodeRequest, GetTaskRequest, LogContext, LogSelector, LogSubscriptionOptions,
    SubscribeLogsRequest,
};
use tonic::transport::Channel;

use super::short;
use crate::cli::container::write_entry;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow log output.
    #[arg(short, long)]
    follow: bool,
    /// Number of lines to show from the end of each task's log, or "all".
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Show timestamps.
    #[arg(short, long)]
    timestamps: bool,
    /// Do not truncate IDs.
    #[arg(long)]
    no_trunc: bool,
    /// Do not map IDs to names (node hostname, service name).
    #[arg(long)]
    no_resolve: bool,
    /// Do not include task IDs in the prefix.
    #[arg(long)]
    no_task_ids: bool,
    /// Only the lines, without the task and node prefix.
    #[arg(long)]
    raw: bool,
    /// A service (name, ID or unique ID prefix) or a task (ID or unique ID prefix).
    #[arg(value_name = "SERVICE|TASK")]
    target: String,
}

/// The `-n/--tail` value as the broker wants it: negative for all.
fn parse_tail(s: &str) -> Result<i64> {
    if s == "all" {
        return Ok(-1);
    }
    match s.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(n),
        _ => bail!("--tail {s:?}: give a number of lines (0 or more) or \"all\""),
    }
}

pub async fn run(channel: Channel, a: LogsArgs) -> Result<()> {
    let request = SubscribeLogsRequest {
        selector: Some(LogSelector {
            service_ids: vec![a.target.clone()],
            task_ids: vec![],
        }),
        options: Some(LogSubscriptionOptions {
            follow: a.follow,
            tail: parse_tail(&a.tail)?,
        }),
    };
    let mut control = ControlClient::new(channel.clone());
    let mut stream = LogsClient::new(channel)
        .subscribe_logs(request)
        .await?
        .into_inner();
    let mut names = Names::new(&a);
    let mut incomplete = false;
    while let Some(batch) = stream.message().await.context("the log stream broke off")? {
        for w in &batch.warnings {
            eprintln!("warning: {w}");
            incomplete = true;
        }
        for m in &batch.messages {
            let Some(entry) = &m.entry else { continue };
            let header = if a.raw {
                String::new()
            } else {
                let context = m.context.clone().unwrap_or_default();
                names.header(&mut control, &context).await
            };
            write_entry(entry, a.timestamps, &header);
        }
    }
    if incomplete {
        eprintln!("warning: incomplete log stream; some logs could not be retrieved (see above)");
    }
    Ok(())
}

/// Task and node names for the line prefix, looked up once each.
struct Names {
    no_trunc: bool,
    no_resolve: bool,
    no_task_ids: bool,
    tasks: HashMap<String, String>,
    nodes: HashMap<String, String>,
    /// The widest prefix so far, so the `|` columns line up as lines come in.
    width: usize,
}

impl Names {
    fn new(a: &LogsArgs) -> Names {
        Names {
            no_trunc: a.no_trunc,
            no_resolve: a.no_resolve,
            no_task_ids: a.no_task_ids,
            tasks: HashMap::new(),
            nodes: HashMap::new(),
            width: 0,
        }
    }

    fn id<'a>(&self, id: &'a str) -> &'a str {
        if self.no_trunc { id } else { short(id) }
    }

    async fn header(&mut self, control: &mut ControlClient<Channel>, c: &LogContext) -> String {
        if !self.tasks.contains_key(&c.task_id) {
            let name = self.task_name(control, c).await;
            self.tasks.insert(c.task_id.clone(), name);
        }
        if !self.nodes.contains_key(&c.node_id) {
            let name = self.node_name(control, &c.node_id).await;
            self.nodes.insert(c.node_id.clone(), name);
        }
        let prefix = format!("{}@{}", self.tasks[&c.task_id], self.nodes[&c.node_id]);
        self.width = self.width.max(prefix.len());
        format!("{prefix:<width$}    | ", width = self.width)
    }

    /// `service.slot.task` (global: `service.node.task`), as `docker service logs` names tasks.
    async fn task_name(&self, control: &mut ControlClient<Channel>, c: &LogContext) -> String {
        let task = control
            .get_task(GetTaskRequest {
                task_id: c.task_id.clone(),
            })
            .await
            .ok()
            .and_then(|r| r.into_inner().task);
        let Some(task) = task else {
            return self.id(&c.task_id).to_string();
        };
        let service = match task.service_annotations.as_ref() {
            Some(a) if !self.no_resolve && !a.name.is_empty() => a.name.clone(),
            _ => self.id(&task.service_id).to_string(),
        };
        let slot = if task.slot > 0 {
            task.slot.to_string()
        } else {
            self.id(&task.node_id).to_string()
        };
        if self.no_task_ids {
            format!("{service}.{slot}")
        } else {
            format!("{service}.{slot}.{}", self.id(&task.id))
        }
    }

    async fn node_name(&self, control: &mut ControlClient<Channel>, node_id: &str) -> String {
        if self.no_resolve {
            return self.id(node_id).to_string();
        }
        control
            .get_node(GetNodeRequest {
                node_id: node_id.to_string(),
            })
            .await
            .ok()
            .and_then(|r| r.into_inner().node)
            .and_then(|n| n.description)
            .map(|d| d.hostname)
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| self.id(node_id).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_tail;

    #[test]
    fn tail_is_a_count_or_all() {
        assert_eq!(parse_tail("all").unwrap(), -1);
        assert_eq!(parse_tail("0").unwrap(), 0);
        assert_eq!(parse_tail("25").unwrap(), 25);
        let e = parse_tail("-3").unwrap_err().to_string();
        assert!(e.contains("--tail"), "{e}");
        assert!(parse_tail("lots").is_err());
    }
}
