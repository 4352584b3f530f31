//! The Store's in-memory tables and the one function that changes them: `apply`.
//!
//! Every replica runs `apply` on the same proposals in the same log order, so everything it
//! decides (conflicts, unique names, versions, kept creation times) depends only on the tables
//! and the proposal, never on a clock or on which node runs it. The sled state machine, the
//! in-memory test Store and snapshot installation all go through this module.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use prost::Message;
use shoal_proto::{
    ObjectKind, StoreAction, StoreFailure, StoreObject, StoreProposal, StoreSnapshot, store_action,
    store_failure,
};

use super::object::{
    By, Index, KINDS, has_unique_name, index_key, index_keys, meta_mut, meta_of, table_slot,
    version_of,
};
use super::watch::Action;

/// One table: objects of a kind by ID, plus their secondary indexes.
#[derive(Clone, Default)]
pub(crate) struct Table {
    objects: BTreeMap<String, Arc<StoreObject>>,
    indexes: HashMap<(Index, String), BTreeSet<String>>,
}

impl Table {
    pub(crate) fn get(&self, id: &str) -> Option<&Arc<StoreObject>> {
        self.objects.get(id)
    }

    pub(crate) fn len(&self) -> usize {
        self.objects.len()
    }

    /// IDs filed under `key` in `index`.
    fn ids_in(&self, index: Index, key: &str) -> impl Iterator<Item = &String> {
        self.indexes
            .get(&(index, key.to_string()))
            .into_iter()
            .flatten()
    }

    /// Objects answering `by`, in ID order.
    pub(crate) fn find(&self, by: By<'_>) -> Vec<&Arc<StoreObject>> {
        match by {
            By::All => self.objects.values().collect(),
            By::IdPrefix(p) => self
                .objects
                .range(p.to_string()..)
                .take_while(|(id, _)| id.starts_with(p))
                .map(|(_, o)| o)
                .collect(),
            _ => {
                let (index, key) = by.index().expect("indexed query");
                self.ids_in(index, key)
                    .filter_map(|id| self.objects.get(id))
                    .collect()
            }
        }
    }

    /// Stores `obj`, re-filing it in the indexes; returns what it replaced.
    fn insert(&mut self, obj: Arc<StoreObject>) -> Option<Arc<StoreObject>> {
        let id = obj.id().to_string();
        let old = self.remove(&id);
        for key in index_keys(&obj) {
            self.indexes.entry(key).or_default().insert(id.clone());
        }
        self.objects.insert(id, obj);
        old
    }

    fn remove(&mut self, id: &str) -> Option<Arc<StoreObject>> {
        let old = self.objects.remove(id)?;
        for key in index_keys(&old) {
            if let Some(set) = self.indexes.get_mut(&key) {
                set.remove(id);
                if set.is_empty() {
                    self.indexes.remove(&key);
                }
            }
        }
        Some(old)
    }
}

/// All tables, one per kind.
#[derive(Clone, Default)]
pub(crate) struct Tables {
    tables: [Table; KINDS.len()],
}

/// One change made by a commit, as watchers see it.
#[derive(Clone, Debug)]
pub(crate) struct Change {
    pub action: Action,
    /// The object as stored now (for `Remove`, as it was last stored).
    pub object: Arc<StoreObject>,
    /// The previous version, for `Update`.
    pub old: Option<Arc<StoreObject>>,
}

impl Tables {
    pub(crate) fn table(&self, kind: ObjectKind) -> Option<&Table> {
        table_slot(kind).map(|s| &self.tables[s])
    }

    pub(crate) fn get(&self, kind: ObjectKind, id: &str) -> Option<&Arc<StoreObject>> {
        self.table(kind)?.get(id)
    }

    /// Every object, table by table, in ID order.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Arc<StoreObject>> {
        self.tables.iter().flat_map(|t| t.objects.values())
    }

    pub(crate) fn len(&self) -> usize {
        self.tables.iter().map(Table::len).sum()
    }

    /// Tables holding exactly `objects` (from a snapshot or from disk).
    pub(crate) fn from_objects(objects: impl IntoIterator<Item = StoreObject>) -> Self {
        let mut tables = Tables::default();
        for obj in objects {
            if let Some(slot) = table_slot(obj.kind()) {
                tables.tables[slot].insert(Arc::new(obj));
            }
        }
        tables
    }

    /// Validates `proposal` against the tables and, if every action holds, applies all of them
    /// as log entry `index`. On refusal nothing changes.
    pub(crate) fn apply(
        &mut self,
        index: u64,
        proposal: &StoreProposal,
    ) -> Result<Vec<Change>, StoreFailure> {
        let planned = self.check(proposal)?;
        let mut changes = Vec::with_capacity(planned.len());
        for (slot, kind, obj) in planned {
            let table = &mut self.tables[slot];
            match kind {
                store_action::Kind::Create | store_action::Kind::Update => {
                    let mut new = obj.clone();
                    let old = table.get(new.id()).cloned();
                    let meta = meta_mut(&mut new).expect("checked non-empty");
                    meta.version = index;
                    // Creation time is the first write's, whatever a later writer sends.
                    if let Some(created) = old.as_deref().and_then(meta_of) {
                        meta.created_at = created.created_at;
                    }
                    let new = Arc::new(new);
                    table.insert(new.clone());
                    let action = if old.is_some() {
                        Action::Update
                    } else {
                        Action::Create
                    };
                    changes.push(Change {
                        action,
                        object: new,
                        old,
                    });
                }
                store_action::Kind::Delete => {
                    let old = table.remove(obj.id()).expect("checked present");
                    changes.push(Change {
                        action: Action::Remove,
                        object: old,
                        old: None,
                    });
                }
            }
        }
        Ok(changes)
    }

    /// Checks every action; returns them resolved to (table slot, kind, object).
    fn check<'p>(
        &self,
        proposal: &'p StoreProposal,
    ) -> Result<Vec<(usize, store_action::Kind, &'p StoreObject)>, StoreFailure> {
        // What the transaction leaves behind, per object: Some(new) or None (deleted).
        let mut staged: HashMap<(usize, &str), Option<&StoreObject>> = HashMap::new();
        let mut planned = Vec::with_capacity(proposal.actions.len());
        for action in &proposal.actions {
            let (slot, kind, obj) = resolve(action)?;
            let id = obj.id();
            if staged.contains_key(&(slot, id)) {
                return Err(failure(
                    store_failure::Reason::Invalid,
                    obj,
                    format!("{id} is written twice in one transaction"),
                ));
            }
            let current = self.tables[slot].get(id);
            match (kind, current) {
                (store_action::Kind::Create, Some(_)) => {
                    return Err(failure(store_failure::Reason::AlreadyExists, obj, ""));
                }
                (store_action::Kind::Update | store_action::Kind::Delete, None) => {
                    return Err(failure(store_failure::Reason::NotFound, obj, ""));
                }
                (store_action::Kind::Update, Some(cur)) if version_of(obj) != version_of(cur) => {
                    return Err(conflict(obj, cur));
                }
                (store_action::Kind::Delete, Some(cur))
                    if version_of(obj) != 0 && version_of(obj) != version_of(cur) =>
                {
                    return Err(conflict(obj, cur));
                }
                _ => {}
            }
            let after = (kind != store_action::Kind::Delete).then_some(obj);
            staged.insert((slot, id), after);
            planned.push((slot, kind, obj));
        }
        // Names are checked on the final state, so a transaction may swap or reuse names.
        for (&(slot, id), after) in &staged {
            let Some(obj) = after else { continue };
            if !has_unique_name(KINDS[slot]) {
                continue;
            }
            let Some(name) = index_key(obj, Index::Name) else {
                continue;
            };
            let committed_holder = self.tables[slot].ids_in(Index::Name, &name).find(|other| {
                other.as_str() != id && !staged.contains_key(&(slot, other.as_str()))
            });
            let staged_holder = staged.iter().find_map(|(&(s, other), o)| {
                let o = (*o)?;
                (s == slot && other != id && index_key(o, Index::Name).as_deref() == Some(&name))
                    .then_some(other)
            });
            if let Some(holder) = committed_holder.map(String::as_str).or(staged_holder) {
                let mut f = failure(store_failure::Reason::NameTaken, obj, name);
                f.id = holder.to_string();
                return Err(f);
            }
        }
        Ok(planned)
    }

    /// The changes that turn `self` into `new`, as watchers should see a snapshot install.
    pub(crate) fn diff(&self, new: &Tables) -> Vec<Change> {
        let mut changes = Vec::new();
        for (old_t, new_t) in self.tables.iter().zip(new.tables.iter()) {
            for (id, old) in &old_t.objects {
                if !new_t.objects.contains_key(id) {
                    changes.push(Change {
                        action: Action::Remove,
                        object: old.clone(),
                        old: None,
                    });
                }
            }
            for (id, obj) in &new_t.objects {
                match old_t.objects.get(id) {
                    None => changes.push(Change {
                        action: Action::Create,
                        object: obj.clone(),
                        old: None,
                    }),
                    Some(old) if old != obj => changes.push(Change {
                        action: Action::Update,
                        object: obj.clone(),
                        old: Some(old.clone()),
                    }),
                    Some(_) => {}
                }
            }
        }
        changes
    }

    /// The prost-encoded body of a snapshot of these tables.
    pub(crate) fn encode_snapshot(&self) -> Vec<u8> {
        StoreSnapshot {
            objects: self.all().map(|o| (**o).clone()).collect(),
        }
        .encode_to_vec()
    }

    pub(crate) fn decode_snapshot(bytes: &[u8]) -> Result<Tables, prost::DecodeError> {
        Ok(Tables::from_objects(StoreSnapshot::decode(bytes)?.objects))
    }
}

/// The table slot, kind and object of an action, or why it is malformed.
fn resolve(
    action: &StoreAction,
) -> Result<(usize, store_action::Kind, &StoreObject), StoreFailure> {
    let invalid = |detail: &str| StoreFailure {
        reason: store_failure::Reason::Invalid as i32,
        detail: detail.to_string(),
        ..Default::default()
    };
    let obj = action
        .object
        .as_ref()
        .filter(|o| o.object.is_some())
        .ok_or_else(|| invalid("an action carries no object"))?;
    let slot = table_slot(obj.kind()).ok_or_else(|| invalid("an action has no object kind"))?;
    if obj.id().is_empty() {
        return Err(failure(
            store_failure::Reason::Invalid,
            obj,
            "the object has no ID",
        ));
    }
    let kind = store_action::Kind::try_from(action.kind)
        .map_err(|_| invalid(&format!("unknown action kind {}", action.kind)))?;
    Ok((slot, kind, obj))
}

fn failure(
    reason: store_failure::Reason,
    obj: &StoreObject,
    detail: impl Into<String>,
) -> StoreFailure {
    StoreFailure {
        reason: reason as i32,
        kind: obj.kind() as i32,
        id: obj.id().to_string(),
        detail: detail.into(),
        ..Default::default()
    }
}

fn conflict(proposed: &StoreObject, current: &StoreObject) -> StoreFailure {
    StoreFailure {
        expected_version: version_of(proposed),
        actual_version: version_of(current),
        ..failure(store_failure::Reason::Conflict, proposed, "")
    }
}
