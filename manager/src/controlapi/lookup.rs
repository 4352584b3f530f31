//! Finding objects the way the Docker CLI does: by full ID, then by name (hostname for nodes),
//! then by a unique ID prefix (tasks have no name: ID or prefix). Ambiguity is an error that
//! lists the candidates.

use shoal_proto::{Node, Service, Task};
use shoal_raft::By;
use tonic::Status;

use super::Read;

/// The node `reference` names, or why none (or several) does.
pub fn resolve_node(view: &impl Read, reference: &str) -> Result<Node, Status> {
    if reference.is_empty() {
        return Err(Status::invalid_argument(
            "a node ID or hostname is required",
        ));
    }
    if let Some(node) = view.get::<Node>(reference) {
        return Ok(node);
    }
    let by_name = view.find::<Node>(By::Hostname(reference));
    match by_name.len() {
        1 => return Ok(by_name.into_iter().next().unwrap()),
        0 => {}
        _ => return Err(ambiguous("node", reference, by_name.iter().map(|n| &n.id))),
    }
    let by_prefix = view.find::<Node>(By::IdPrefix(reference));
    match by_prefix.len() {
        1 => Ok(by_prefix.into_iter().next().unwrap()),
        0 => Err(Status::not_found(format!(
            "no such node: {reference} (see `shoal node ls`)"
        ))),
        _ => Err(ambiguous(
            "node",
            reference,
            by_prefix.iter().map(|n| &n.id),
        )),
    }
}

/// The service `reference` names (full ID, name, or unique ID prefix), or why none does.
pub fn resolve_service(view: &impl Read, reference: &str) -> Result<Service, Status> {
    if reference.is_empty() {
        return Err(Status::invalid_argument(
            "a service ID or name is required (see `shoal service ls`)",
        ));
    }
    if let Some(service) = view.get::<Service>(reference) {
        return Ok(service);
    }
    // Names are unique among services, so a name match is the answer.
    if let Some(service) = view.find::<Service>(By::Name(reference)).into_iter().next() {
        return Ok(service);
    }
    let by_prefix = view.find::<Service>(By::IdPrefix(reference));
    match by_prefix.len() {
        1 => Ok(by_prefix.into_iter().next().unwrap()),
        0 => Err(Status::not_found(format!(
            "no such service: {reference} (see `shoal service ls`)"
        ))),
        _ => Err(ambiguous(
            "service",
            reference,
            by_prefix.iter().map(|s| &s.id),
        )),
    }
}

/// The task `reference` names (full ID or unique ID prefix), or why none does.
pub fn resolve_task(view: &impl Read, reference: &str) -> Result<Task, Status> {
    if reference.is_empty() {
        return Err(Status::invalid_argument(
            "a task ID is required (see `shoal service ps SERVICE`)",
        ));
    }
    if let Some(task) = view.get::<Task>(reference) {
        return Ok(task);
    }
    let by_prefix = view.find::<Task>(By::IdPrefix(reference));
    match by_prefix.len() {
        1 => Ok(by_prefix.into_iter().next().unwrap()),
        0 => Err(Status::not_found(format!(
            "no such task: {reference} (see `shoal service ps SERVICE`)"
        ))),
        _ => Err(ambiguous(
            "task",
            reference,
            by_prefix.iter().map(|t| &t.id),
        )),
    }
}

pub fn ambiguous<'a>(kind: &str, reference: &str, ids: impl Iterator<Item = &'a String>) -> Status {
    let ids: Vec<&str> = ids.map(|s| s.as_str()).collect();
    Status::invalid_argument(format!(
        "{kind} {reference:?} is ambiguous ({} matches: {}); use a longer ID",
        ids.len(),
        ids.join(", ")
    ))
}
