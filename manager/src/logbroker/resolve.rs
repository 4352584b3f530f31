//! From what the user typed to the tasks whose logs to read: `service logs SERVICE|TASK` takes
//! a service (ID, unique ID prefix or name) or a task (ID or unique ID prefix), as Docker does.
//! The lookups are the Control API's, so both answer the same reference the same way.

use shoal_proto::{LogSelector, Task};
use shoal_raft::{By, Store};
use tonic::{Code, Status};

use crate::controlapi::{resolve_service, resolve_task};

/// The tasks the selector names; every reference must name exactly one service or task.
pub fn tasks(store: &Store, selector: &LogSelector) -> Result<Vec<Task>, Status> {
    store.view(|view| {
        let mut out: Vec<Task> = Vec::new();
        for reference in &selector.service_ids {
            match resolve_service(view, reference) {
                Ok(s) => out.extend(view.find::<Task>(By::ServiceId(&s.id))),
                // Docker's `service logs` takes a task too, in the same place.
                Err(e) if e.code() == Code::NotFound => match resolve_task(view, reference) {
                    Ok(t) => out.push(t),
                    Err(e) if e.code() == Code::NotFound => {
                        return Err(Status::not_found(format!(
                            "no such service or task: {reference}; see `shoal service ls` and \
                             `shoal service ps SERVICE`"
                        )));
                    }
                    Err(e) => return Err(e),
                },
                Err(e) => return Err(e),
            }
        }
        for reference in &selector.task_ids {
            out.push(resolve_task(view, reference)?);
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out.dedup_by(|a, b| a.id == b.id);
        Ok(out)
    })
}
