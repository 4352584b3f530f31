//! Finding objects the way the Docker CLI does: by full ID, then by name (hostname for nodes),
//! then by a unique ID prefix. Ambiguity is an error that lists the candidates.

use shoal_proto::Node;
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

pub fn ambiguous<'a>(kind: &str, reference: &str, ids: impl Iterator<Item = &'a String>) -> Status {
    let ids: Vec<&str> = ids.map(|s| s.as_str()).collect();
    Status::invalid_argument(format!(
        "{kind} {reference:?} is ambiguous ({} matches: {}); use a longer ID",
        ids.len(),
        ids.join(", ")
    ))
}
