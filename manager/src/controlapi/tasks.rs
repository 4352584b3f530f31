//! Tasks, read-only: the orchestrator makes them and workers report on them; the API only lets
//! callers find them (`service ps`, progress, logs). Filters combine as Docker's do: values of
//! one filter are alternatives, different filters must all hold.

use shoal_proto::{Task, list_tasks_request};
use shoal_raft::{By, View};

pub(super) fn list(view: &View<'_>, f: &list_tasks_request::Filters) -> Vec<Task> {
    // Start from the narrowest index the filters allow, then apply every filter.
    let candidates: Vec<Task> = if !f.service_ids.is_empty() {
        f.service_ids
            .iter()
            .flat_map(|id| view.find::<Task>(By::ServiceId(id)))
            .collect()
    } else if !f.node_ids.is_empty() {
        f.node_ids
            .iter()
            .flat_map(|id| view.find::<Task>(By::NodeId(id)))
            .collect()
    } else {
        view.list::<Task>()
    };
    let mut tasks: Vec<Task> = candidates
        .into_iter()
        .filter(|t| {
            (f.service_ids.is_empty() || f.service_ids.contains(&t.service_id))
                && (f.node_ids.is_empty() || f.node_ids.contains(&t.node_id))
                && (f.desired_states.is_empty() || f.desired_states.contains(&t.desired_state))
                && (f.id_prefixes.is_empty() || f.id_prefixes.iter().any(|p| t.id.starts_with(p)))
        })
        .collect();
    // The same service ID (or node ID) given twice must not list its tasks twice.
    tasks.sort_by(|a, b| a.id.cmp(&b.id));
    tasks.dedup_by(|a, b| a.id == b.id);
    // Service, then slot (global: node), then newest first: the order `service ps` shows.
    tasks.sort_by(|a, b| {
        let created = |t: &Task| {
            t.meta
                .as_ref()
                .and_then(|m| m.created_at)
                .map_or((0, 0), |c| (c.seconds, c.nanos))
        };
        a.service_id
            .cmp(&b.service_id)
            .then(a.slot.cmp(&b.slot))
            .then(a.node_id.cmp(&b.node_id))
            .then(created(b).cmp(&created(a)))
            .then(a.id.cmp(&b.id))
    });
    tasks
}
