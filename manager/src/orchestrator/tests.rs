//! Every orchestration controller together, with fake workers that run what they are assigned:
//! the scenarios the end-to-end tests exercise with real daemons, here on paused time.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_proto::{NodeAvailability, Task, TaskState, node_status};
use shoal_raft::{By, Store};

use super::testutil::*;
use super::{fills_slot, observed};
use crate::allocator::Allocator;
use crate::clock::Clock;
use crate::orchestrator::constraintenforcer::ConstraintEnforcer;
use crate::orchestrator::global::GlobalOrchestrator;
use crate::orchestrator::replicated::ReplicatedOrchestrator;
use crate::orchestrator::restart::RestartSupervisor;
use crate::orchestrator::taskreaper::TaskReaper;
use crate::scheduling::SchedulerController;

/// The leader's orchestration controllers.
fn leader(store: &Store, clock: &Clock) -> Vec<Running> {
    vec![
        spawn(ReplicatedOrchestrator::new(store.clone(), clock.clone())),
        spawn(GlobalOrchestrator::new(store.clone(), clock.clone())),
        spawn(RestartSupervisor::new(store.clone(), clock.clone())),
        spawn(ConstraintEnforcer::new(store.clone(), clock.clone())),
        spawn(TaskReaper::new(store.clone())),
        spawn(Allocator::new(store.clone(), clock.clone())),
        spawn(SchedulerController::new(store.clone(), clock.clone())),
    ]
}

/// Workers for every node not in `dead`: they start what they are assigned and stop what is
/// retired, as the dispatcher would record it.
fn workers(store: &Store, clock: &Clock, dead: Arc<Mutex<HashSet<String>>>) -> Running {
    struct Workers(Store, Clock, Arc<Mutex<HashSet<String>>>);
    impl crate::leader::Controller for Workers {
        fn name(&self) -> &'static str {
            "fake workers"
        }
        fn run(
            &self,
            cancel: tokio_util::sync::CancellationToken,
        ) -> crate::leader::ControllerFuture {
            let (store, clock, dead) = (self.0.clone(), self.1.clone(), self.2.clone());
            Box::pin(async move {
                while !cancel.is_cancelled() {
                    for t in store.list::<Task>() {
                        if t.node_id.is_empty() || dead.lock().unwrap().contains(&t.node_id) {
                            continue;
                        }
                        let state = observed(&t);
                        let next = if state == TaskState::Assigned
                            && t.desired_state() == TaskState::Running
                        {
                            TaskState::Running
                        } else if !state.is_terminal()
                            && state >= TaskState::Assigned
                            && t.desired_state() >= TaskState::Shutdown
                        {
                            TaskState::Shutdown
                        } else {
                            continue;
                        };
                        let _ = store
                            .update(|tx| {
                                let Some(mut t) = tx.get::<Task>(&t.id) else {
                                    return Ok(());
                                };
                                if observed(&t) != state {
                                    return Ok(());
                                }
                                let s = t.status.get_or_insert_with(Default::default);
                                s.state = next as i32;
                                s.timestamp = Some(clock.now());
                                tx.update(t)
                            })
                            .await;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(())
            })
        }
    }
    spawn(Workers(store.clone(), clock.clone(), dead))
}

fn running_on(store: &Store, svc: &str) -> Vec<String> {
    let mut nodes: Vec<String> = (live_tasks(store, svc).into_iter())
        .filter(|t| observed(t) == TaskState::Running)
        .map(|t| t.node_id)
        .collect();
    nodes.sort();
    nodes
}

#[tokio::test(start_paused = true)]
async fn services_converge_and_recover_from_a_lost_node() {
    let store = Store::in_memory();
    let clock = clock();
    let a = add_node(&store, "a", &[]).await;
    let b = add_node(&store, "b", &[]).await;
    let dead = Arc::new(Mutex::new(HashSet::new()));
    let _w = workers(&store, &clock, dead.clone());
    let _l = leader(&store, &clock);
    let web = create_service(&store, "web", replicated(4)).await;
    let agent = create_service(&store, "agent", global()).await;
    wait_for(|| running_on(&store, &web).len() == 4 && running_on(&store, &agent).len() == 2).await;
    assert_eq!(
        running_on(&store, &web).iter().filter(|n| **n == a).count(),
        2
    );

    // b is lost: its replicated tasks move to a at once, its global task is retired.
    dead.lock().unwrap().insert(b.clone());
    set_node_state(&store, &b, node_status::State::Down).await;
    wait_for(|| running_on(&store, &web) == vec![a.clone(); 4]).await;
    wait_for(|| running_on(&store, &agent) == vec![a.clone()]).await;
    assert_eq!(live_slots(&store, &web), vec![1, 2, 3, 4]);

    // b comes back: its old tasks are stopped, and it gets the global task again.
    dead.lock().unwrap().remove(&b);
    set_node_state(&store, &b, node_status::State::Ready).await;
    wait_for(|| running_on(&store, &agent).len() == 2).await;
    wait_for(|| {
        store
            .find::<Task>(By::NodeId(&b))
            .iter()
            .filter(|t| !fills_slot(t))
            .all(|t| observed(t) == TaskState::Shutdown)
    })
    .await;

    // Drain a: the replicated tasks move to b.
    set_availability(&store, &a, NodeAvailability::Drain).await;
    wait_for(|| running_on(&store, &web) == vec![b.clone(); 4]).await;
    wait_for(|| running_on(&store, &agent) == vec![b.clone()]).await;
}

#[tokio::test(start_paused = true)]
async fn a_leader_change_mid_flight_creates_no_duplicates() {
    let store = Store::in_memory();
    let clock = clock();
    add_node(&store, "a", &[]).await;
    add_node(&store, "b", &[]).await;
    let _w = workers(&store, &clock, Arc::new(Mutex::new(HashSet::new())));
    let web = create_service(&store, "web", replicated(6)).await;
    let agent = create_service(&store, "agent", global()).await;
    for _ in 0..3 {
        let l = leader(&store, &clock);
        tokio::time::sleep(Duration::from_millis(150)).await;
        drop(l);
    }
    let _l = leader(&store, &clock);
    wait_for(|| running_on(&store, &web).len() == 6 && running_on(&store, &agent).len() == 2).await;
    settle().await;
    assert_eq!(store.find::<Task>(By::ServiceId(&web)).len(), 6);
    assert_eq!(store.find::<Task>(By::ServiceId(&agent)).len(), 2);
}
