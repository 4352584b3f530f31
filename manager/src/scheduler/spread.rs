//! Choosing among the nodes that pass: spread preferences, then least loaded, without sorting.
//!
//! Spread preferences (`--placement-pref spread=node.labels.zone`, possibly several) make a tree:
//! one level per descriptor, one branch per value, nodes lacking the label in a branch of their
//! own, as in Swarm. Each branch knows how many of the service's tasks run below it, and a task
//! goes down the branch with the fewest (ties to the first value in sorted order); that greedy
//! choice reaches the same even split as SwarmKit's per-batch water filling. At the leaves a
//! min-heap ranks nodes by (recent-failure penalty, tasks of this service, tasks in total, node
//! ID), so placing a task costs O(depth x log n) instead of re-sorting every node per batch.
//!
//! ```text
//!   root ── zone=a (3 tasks) ── heap [n1, n4]
//!        ├─ zone=b (1 task)  ── heap [n2]        <- next task goes here
//!        └─ (no zone) (2)    ── heap [n3, n5]
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use shoal_proto::Task;

use super::constraint::{Key, SpreadError, parse_spread};
use super::node_info::NodeInfo;

/// A node's rank for one service, smallest best: (recent-failure penalty, tasks of the service,
/// tasks in total, node index). Nodes are indexed in ID order, so the last field is the
/// deterministic tie-break.
pub(crate) type Rank = (u32, u32, u32, u32);

/// The spread descriptors of a task, in the order they apply.
pub(crate) fn spread_keys(task: &Task) -> Result<Vec<Key>, SpreadError> {
    let placement = task.spec.as_ref().and_then(|s| s.placement.as_ref());
    placement
        .map_or(&[][..], |p| &p.preferences[..])
        .iter()
        .filter(|p| !p.spread.trim().is_empty())
        .map(|p| parse_spread(&p.spread))
        .collect()
}

/// The decision tree of one batch.
pub(crate) enum Tree {
    /// Candidate nodes, best on top.
    Leaf(BinaryHeap<Reverse<Rank>>),
    /// Branches, and a heap of (tasks of the service below, branch index) over those that may
    /// still have room.
    Split {
        children: Vec<Tree>,
        order: BinaryHeap<Reverse<(u64, u32)>>,
    },
}

/// Which branch each node falls in for one spread descriptor. Computed once per snapshot and
/// descriptor, so building a batch's tree compares integers rather than label strings.
pub(crate) struct Column {
    /// Per node: the rank of its value among the distinct values, sorted; nodes lacking the
    /// label get the last branch, after every value.
    branch_of: Vec<u32>,
}

impl Column {
    pub(crate) fn new(nodes: &[NodeInfo], key: &Key) -> Column {
        let values: Vec<Option<&str>> = nodes.iter().map(|n| key.value(&n.node)).collect();
        let mut distinct: Vec<&str> = values.iter().flatten().copied().collect();
        distinct.sort_unstable();
        distinct.dedup();
        let branch_of = (values.iter())
            .map(|v| match v.map(|v| distinct.binary_search(&v)) {
                Some(Ok(i) | Err(i)) => i as u32,
                None => distinct.len() as u32,
            })
            .collect();
        Column { branch_of }
    }
}

impl Tree {
    /// Builds the tree over every node (so branch counts include tasks on nodes that take no new
    /// ones, e.g. paused) with `ranks[i]` set for nodes that passed the static filters.
    /// `service_tasks[i]` is node i's count of the service's tasks.
    pub(crate) fn build(
        columns: &[&Column],
        service_tasks: &[u32],
        ranks: &[Option<Rank>],
    ) -> Tree {
        if columns.is_empty() {
            return Tree::Leaf(ranks.iter().flatten().copied().map(Reverse).collect());
        }
        let all: Vec<u32> = (0..ranks.len() as u32).collect();
        build_level(all, columns, service_tasks, ranks)
    }

    /// Picks a node for one task. `try_node(i)` runs the dynamic filters on node i and, if they
    /// pass, records the task there; a refused node leaves the tree for the rest of the batch,
    /// since the batch only ever adds load to it.
    pub(crate) fn place(&mut self, try_node: &mut impl FnMut(usize) -> bool) -> Option<usize> {
        match self {
            Tree::Leaf(heap) => {
                while let Some(Reverse((penalty, service, total, idx))) = heap.pop() {
                    if try_node(idx as usize) {
                        heap.push(Reverse((penalty, service + 1, total + 1, idx)));
                        return Some(idx as usize);
                    }
                }
                None
            }
            Tree::Split { children, order } => {
                while let Some(Reverse((tasks, child))) = order.pop() {
                    // A branch that cannot take this task is full for the batch: drop it.
                    if let Some(idx) = children[child as usize].place(try_node) {
                        order.push(Reverse((tasks + 1, child)));
                        return Some(idx);
                    }
                }
                None
            }
        }
    }
}

fn build_level(
    mut members: Vec<u32>,
    columns: &[&Column],
    service_tasks: &[u32],
    ranks: &[Option<Rank>],
) -> Tree {
    let Some((column, rest)) = columns.split_first() else {
        let heap = members
            .iter()
            .filter_map(|&i| ranks[i as usize])
            .map(Reverse);
        return Tree::Leaf(heap.collect());
    };
    // Stable sort: within a branch, nodes stay in ID order.
    members.sort_by_key(|&i| column.branch_of[i as usize]);
    let mut children = Vec::new();
    let mut order = BinaryHeap::new();
    for group in
        members.chunk_by(|&a, &b| column.branch_of[a as usize] == column.branch_of[b as usize])
    {
        // A branch without a single candidate can never take a task: leave it out.
        if !group.iter().any(|&i| ranks[i as usize].is_some()) {
            continue;
        }
        let tasks: u64 = group
            .iter()
            .map(|&i| u64::from(service_tasks[i as usize]))
            .sum();
        order.push(Reverse((tasks, children.len() as u32)));
        children.push(build_level(group.to_vec(), rest, service_tasks, ranks));
    }
    Tree::Split { children, order }
}
