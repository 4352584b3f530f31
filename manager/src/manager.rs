//! A running manager: the services it serves on the cluster port and the controllers it runs
//! while it leads, all over one Raft node's Store.
//!
//! ```text
//!  cluster port (mTLS) ─┬─ RaftTransport      managers only
//!                       ├─ NodeCa             joiners (token), nodes (renewal), admins
//!                       ├─ ManagerMembership  managers only
//!                       ├─ Dispatcher         nodes (worker or manager certificates)
//!                       ├─ Control            admins and managers (remote CLI)
//!                       ├─ Logs               admins and managers (followers forward)
//!                       └─ LogBroker          nodes (leader only)
//!  leader only: dispatcher loops, manager health, roles, orchestrators, allocator, scheduler
//! ```

use std::sync::Arc;

use shoal_proto::control_server::ControlServer;
use shoal_proto::dispatcher_server::DispatcherServer;
use shoal_proto::log_broker_server::LogBrokerServer;
use shoal_proto::logs_server::LogsServer;
use shoal_proto::manager_membership_server::ManagerMembershipServer;
use shoal_proto::node_ca_server::NodeCaServer;
use shoal_raft::{RaftNode, Store};
use tokio_util::sync::CancellationToken;

use crate::allocator::Allocator;
use crate::ca::{Role, RoleInterceptor};
use crate::caserver::CaServer;
use crate::clock::Clock;
use crate::controlapi::ControlApi;
use crate::dispatcher::{Dispatcher, DispatcherService};
use crate::health::ManagerHealth;
use crate::leader::{Controller, ControllerFuture, LeadershipListener, supervise};
use crate::logbroker::{LogBroker, LogBrokerService, LogsService};
use crate::membership::MembershipServer;
use crate::orchestrator::constraintenforcer::ConstraintEnforcer;
use crate::orchestrator::global::GlobalOrchestrator;
use crate::orchestrator::replicated::ReplicatedOrchestrator;
use crate::orchestrator::restart::RestartSupervisor;
use crate::orchestrator::taskreaper::TaskReaper;
use crate::roles::RoleController;
use crate::scheduling::SchedulerController;

pub struct Manager {
    raft: Arc<RaftNode>,
    store: Store,
    dispatcher: Dispatcher,
    logs: LogBroker,
}

impl Manager {
    pub fn new(raft: Arc<RaftNode>) -> Manager {
        let store = raft.store();
        Manager {
            dispatcher: Dispatcher::new(store.clone()),
            logs: LogBroker::new(store.clone()),
            store,
            raft,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn raft(&self) -> &Arc<RaftNode> {
        &self.raft
    }

    /// The Control API, for the daemon's local socket (callers there are root).
    pub fn control_api(&self) -> ControlApi {
        ControlApi::new(self.store.clone())
    }

    /// The CA service, for the local socket too (`cluster ca issue-client`).
    pub fn ca_service(&self) -> CaServer {
        CaServer::new(self.store.clone())
    }

    /// The log broker, for the daemon to give it a way to reach the leader.
    pub fn log_broker(&self) -> &LogBroker {
        &self.logs
    }

    /// `service logs` for the local socket.
    pub fn logs_service(&self) -> LogsService {
        LogsService::new(self.logs.clone())
    }

    /// Everything served on the cluster port, each with its authorization.
    pub fn cluster_routes(&self) -> tonic::service::Routes {
        let managers = RoleInterceptor::new(&[Role::Manager]);
        let admins = RoleInterceptor::new(&[Role::Admin, Role::Manager]);
        tonic::service::Routes::new(managers.clone().wrap(self.raft.transport_service()))
            .add_service(NodeCaServer::new(self.ca_service()))
            .add_service(
                managers.wrap(ManagerMembershipServer::new(MembershipServer::new(
                    self.store.clone(),
                    self.raft.clone(),
                ))),
            )
            .add_service(DispatcherServer::new(DispatcherService::new(
                self.dispatcher.clone(),
            )))
            .add_service(admins.clone().wrap(ControlServer::new(self.control_api())))
            .add_service(admins.wrap(LogsServer::new(self.logs_service())))
            .add_service(LogBrokerServer::new(LogBrokerService::new(
                self.logs.clone(),
            )))
    }

    /// Runs the leader's controllers whenever this manager leads, until `cancel`.
    pub async fn run(&self, cancel: CancellationToken) {
        let controllers: Vec<Arc<dyn Controller>> = vec![
            Arc::new(DispatchController(self.dispatcher.clone())),
            Arc::new(ManagerHealth::new(self.store.clone(), self.raft.clone())),
            Arc::new(RoleController::new(self.store.clone(), self.raft.clone())),
            Arc::new(ReplicatedOrchestrator::new(
                self.store.clone(),
                Clock::System,
            )),
            Arc::new(GlobalOrchestrator::new(self.store.clone(), Clock::System)),
            Arc::new(RestartSupervisor::new(self.store.clone(), Clock::System)),
            Arc::new(ConstraintEnforcer::new(self.store.clone(), Clock::System)),
            Arc::new(TaskReaper::new(self.store.clone())),
            Arc::new(Allocator::new(self.store.clone(), Clock::System)),
            Arc::new(SchedulerController::new(self.store.clone(), Clock::System)),
        ];
        let listener = Arc::new(LeaderAddr {
            dispatcher: self.dispatcher.clone(),
            logs: self.logs.clone(),
        });
        supervise(self.raft.clone(), controllers, listener, cancel).await;
    }
}

/// The dispatcher's leader-only loops as a controller.
struct DispatchController(Dispatcher);

impl Controller for DispatchController {
    fn name(&self) -> &'static str {
        "dispatcher"
    }

    fn run(&self, cancel: CancellationToken) -> ControllerFuture {
        let d = self.0.clone();
        Box::pin(async move { d.run(cancel).await.map_err(|e| e.to_string()) })
    }
}

/// Keeps the dispatcher's redirect address current for agents that reach a follower, and
/// tells the log broker whether it brokers.
struct LeaderAddr {
    dispatcher: Dispatcher,
    logs: LogBroker,
}

impl LeadershipListener for LeaderAddr {
    fn leader_changed(&self, leader_addr: &str, this_node_leads: bool) {
        self.dispatcher.set_leader_addr(leader_addr.to_string());
        self.logs.leader_changed(leader_addr, this_node_leads);
    }
}
