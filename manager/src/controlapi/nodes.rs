//! Node management: listing, availability and labels, promotion and demotion (checked against
//! quorum before anything changes), and removal.

use shoal_proto::{
    Node, NodeRole, NodeSpec, RemoveNodeRequest, UpdateNodeRequest, list_nodes_request,
    manager_status, node_status,
};
use shoal_raft::{Store, View};
use tonic::Status;

use super::ApiError;
use super::lookup::resolve_node;

pub(super) fn list(view: &View<'_>, filters: &list_nodes_request::Filters) -> Vec<Node> {
    let mut nodes: Vec<Node> = view
        .list::<Node>()
        .into_iter()
        .filter(|n| {
            let hostname = n
                .description
                .as_ref()
                .map(|d| d.hostname.as_str())
                .unwrap_or("");
            let labels = n
                .spec
                .as_ref()
                .and_then(|s| s.annotations.as_ref())
                .map(|a| &a.labels);
            (filters.names.is_empty() || filters.names.iter().any(|x| x == hostname))
                && (filters.id_prefixes.is_empty()
                    || filters.id_prefixes.iter().any(|p| n.id.starts_with(p)))
                && (filters.roles.is_empty() || filters.roles.contains(&n.role))
                && filters
                    .labels
                    .iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(k)).is_some_and(|x| x == v))
        })
        .collect();
    // Docker sorts `node ls` by hostname.
    nodes.sort_by(|a, b| hostname(a).cmp(hostname(b)).then(a.id.cmp(&b.id)));
    nodes
}

fn hostname(n: &Node) -> &str {
    n.description
        .as_ref()
        .map(|d| d.hostname.as_str())
        .unwrap_or("")
}

pub(super) async fn update(store: &Store, req: UpdateNodeRequest) -> Result<Node, Status> {
    let spec = req
        .spec
        .ok_or_else(|| Status::invalid_argument("update needs the node's new spec"))?;
    let committed = store
        .update(|tx| {
            let mut node = resolve_node(&*tx, &req.node_id)?;
            let version = node.meta.as_ref().map(|m| m.version).unwrap_or_default();
            if req.node_version != 0 && req.node_version != version {
                return Err(ApiError(Status::aborted(format!(
                    "node {} changed since you read it (version {} is now {version}); read it \
                     again and retry",
                    node.id, req.node_version
                ))));
            }
            let old_role = desired_role(node.spec.as_ref());
            let new_role = NodeRole::try_from(spec.desired_role).unwrap_or_default();
            if old_role == NodeRole::Manager && new_role == NodeRole::Worker {
                check_demotion(&tx.list::<Node>(), &node)?;
            }
            let id = node.id.clone();
            node.spec = Some(spec.clone());
            tx.update(node)?;
            Ok::<_, ApiError>(id)
        })
        .await?;
    committed
        .get::<Node>(&committed.value)
        .ok_or_else(|| Status::internal("updated node missing from the commit"))
}

fn desired_role(spec: Option<&NodeSpec>) -> NodeRole {
    spec.and_then(|s| NodeRole::try_from(s.desired_role).ok())
        .unwrap_or_default()
}

/// Refuses a demotion that would leave no manager, or too few reachable ones for a quorum.
fn check_demotion(all: &[Node], node: &Node) -> Result<(), Status> {
    let managers: Vec<&Node> = all.iter().filter(|n| n.manager_status.is_some()).collect();
    if node.manager_status.is_none() {
        return Ok(()); // Not in Raft yet: nothing to protect.
    }
    if managers.len() <= 1 {
        return Err(Status::failed_precondition(format!(
            "cannot demote node {}: it is the last manager, and the cluster state would be lost; \
             promote another node first (`shoal node promote NODE`)",
            node.id
        )));
    }
    let remaining = managers.len() - 1;
    let reachable = managers
        .iter()
        .filter(|m| m.id != node.id)
        .filter(|m| {
            m.manager_status
                .as_ref()
                .is_some_and(|s| s.reachability == manager_status::Reachability::Reachable as i32)
        })
        .count();
    let quorum = remaining / 2 + 1;
    if reachable < quorum {
        return Err(Status::failed_precondition(format!(
            "cannot demote node {}: the {remaining} remaining managers would need {quorum} \
             reachable for a quorum, but only {reachable} are; bring the unreachable managers \
             back (or remove them) first",
            node.id
        )));
    }
    Ok(())
}

pub(super) async fn remove(store: &Store, req: RemoveNodeRequest) -> Result<(), Status> {
    store
        .update(|tx| {
            let node = resolve_node(&*tx, &req.node_id)?;
            if node.manager_status.is_some() || node.role == NodeRole::Manager as i32 {
                return Err(ApiError(Status::failed_precondition(format!(
                    "node {} is a manager; demote it first (`shoal node demote {}`), then remove \
                     it",
                    node.id, node.id
                ))));
            }
            let state = node.status.as_ref().map(|s| s.state).unwrap_or_default();
            if state != node_status::State::Down as i32 && !req.force {
                return Err(ApiError(Status::failed_precondition(format!(
                    "node {} is not down and can't be removed; stop its daemon (or `shoal \
                     cluster leave` on it) first, or use --force",
                    node.id
                ))));
            }
            tx.delete::<Node>(&node.id)?;
            Ok::<_, ApiError>(())
        })
        .await?;
    Ok(())
}
