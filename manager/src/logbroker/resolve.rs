//! From what the user typed to the tasks whose logs to read: `service logs SERVICE|TASK` takes
//! a service (ID, unique ID prefix or name) or a task (ID or unique ID prefix), as Docker does.

use shoal_proto::{LogSelector, Service, Task};
use shoal_raft::{By, Store};
use tonic::Status;

/// The tasks the selector names; every reference must name exactly one service or task.
pub fn tasks(store: &Store, selector: &LogSelector) -> Result<Vec<Task>, Status> {
    let mut out: Vec<Task> = Vec::new();
    for reference in &selector.service_ids {
        match service(store, reference)? {
            Some(s) => out.extend(store.find::<Task>(By::ServiceId(&s.id))),
            // Docker's `service logs` takes a task too, in the same place.
            None => match task(store, reference)? {
                Some(t) => out.push(t),
                None => {
                    return Err(Status::not_found(format!(
                        "no such service or task: {reference}; see `shoal service ls` and \
                         `shoal service ps SERVICE`"
                    )));
                }
            },
        }
    }
    for reference in &selector.task_ids {
        match task(store, reference)? {
            Some(t) => out.push(t),
            None => {
                return Err(Status::not_found(format!(
                    "no such task: {reference}; see `shoal service ps SERVICE`"
                )));
            }
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out.dedup_by(|a, b| a.id == b.id);
    Ok(out)
}

fn service(store: &Store, reference: &str) -> Result<Option<Service>, Status> {
    if reference.is_empty() {
        return Err(Status::invalid_argument(
            "an empty service reference; give a service name or ID",
        ));
    }
    if let Some(s) = store.get::<Service>(reference) {
        return Ok(Some(s));
    }
    if let Some(s) = store
        .find::<Service>(By::Name(reference))
        .into_iter()
        .next()
    {
        return Ok(Some(s));
    }
    unique(
        store.find::<Service>(By::IdPrefix(reference)),
        reference,
        "service",
    )
}

fn task(store: &Store, reference: &str) -> Result<Option<Task>, Status> {
    if let Some(t) = store.get::<Task>(reference) {
        return Ok(Some(t));
    }
    unique(
        store.find::<Task>(By::IdPrefix(reference)),
        reference,
        "task",
    )
}

fn unique<T>(mut found: Vec<T>, reference: &str, kind: &str) -> Result<Option<T>, Status> {
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        n => Err(Status::invalid_argument(format!(
            "{reference} is a prefix of {n} {kind} IDs; give more characters"
        ))),
    }
}
