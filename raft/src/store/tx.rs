//! Transactions: read the local tables, stage writes, and turn them into one proposal.
//!
//! A `Tx` is a plan, not a lock. Its reads see the local replica plus its own staged writes;
//! the decisions that matter (does the object still have the version you read? is the name
//! free?) are taken again when the proposal is applied in log order, on every replica alike.
//! Timestamps are stamped here, on the proposing side, so that every replica applies the same
//! bytes.

use std::collections::HashMap;

use shoal_proto::{ObjectKind, StoreAction, StoreObject, StoreProposal, Timestamp, store_action};

use super::View;
use super::object::{By, Object, meta_mut, version_of};
use crate::error::StoreError;

enum Staged {
    Create(StoreObject),
    Update(StoreObject),
    Delete(StoreObject),
}

/// A Store transaction under construction; see `Store::update`.
pub struct Tx<'a> {
    view: View<'a>,
    order: Vec<(ObjectKind, String)>,
    staged: HashMap<(ObjectKind, String), Staged>,
    now: Timestamp,
}

impl<'a> Tx<'a> {
    pub(crate) fn new(view: View<'a>) -> Self {
        Tx {
            view,
            order: Vec::new(),
            staged: HashMap::new(),
            now: Timestamp::now(),
        }
    }

    /// The object as this transaction sees it (its own writes included).
    pub fn get<T: Object>(&self, id: &str) -> Option<T> {
        match self.staged.get(&(T::KIND, id.to_string())) {
            Some(Staged::Create(o) | Staged::Update(o)) => T::from_store(o.clone()),
            Some(Staged::Delete(_)) => None,
            None => self.view.get::<T>(id),
        }
    }

    /// Objects answering `by`, this transaction's writes included, in ID order.
    pub fn find<T: Object>(&self, by: By<'_>) -> Vec<T> {
        let mut out: Vec<T> = self
            .view
            .find::<T>(by)
            .into_iter()
            .filter(|o| !self.staged.contains_key(&(T::KIND, o.id().to_string())))
            .collect();
        for ((kind, _), staged) in &self.staged {
            if let (true, Staged::Create(o) | Staged::Update(o)) = (*kind == T::KIND, staged)
                && by.matches(o)
            {
                out.extend(T::from_store(o.clone()));
            }
        }
        out.sort_by(|a, b| a.id().cmp(b.id()));
        out
    }

    /// Every object of the kind, as this transaction sees them.
    pub fn list<T: Object>(&self) -> Vec<T> {
        self.find::<T>(By::All)
    }

    /// Log index of the local state this transaction reads.
    pub fn read_index(&self) -> u64 {
        self.view.index()
    }

    /// Creates `obj` (its ID must be set and unused); stamps its creation time.
    pub fn create<T: Object>(&mut self, obj: T) -> Result<(), StoreError> {
        let mut obj = obj.into_store();
        let key = key_of(&obj)?;
        match self.staged.get(&key) {
            Some(Staged::Delete(_)) => {
                return Err(StoreError::Invalid(format!(
                    "{} is deleted and re-created in one transaction; use update instead",
                    key.1
                )));
            }
            Some(_) => {
                return Err(StoreError::AlreadyExists {
                    kind: super::object::kind_name(key.0),
                    id: key.1,
                });
            }
            None => {}
        }
        let meta = meta_mut(&mut obj).expect("non-empty object");
        meta.version = 0;
        meta.created_at = Some(self.now);
        meta.updated_at = Some(self.now);
        self.stage(key, Staged::Create(obj));
        Ok(())
    }

    /// Replaces an object. Its `meta.version` must be the one it was read at: if someone wrote
    /// it since, the whole transaction is refused with `StoreError::Conflict`.
    pub fn update<T: Object>(&mut self, obj: T) -> Result<(), StoreError> {
        let mut obj = obj.into_store();
        let key = key_of(&obj)?;
        let now = self.now;
        let staged = match self.staged.remove(&key) {
            // Updating an object created in this transaction just changes what is created.
            Some(Staged::Create(prev)) => {
                let meta = meta_mut(&mut obj).expect("non-empty object");
                *meta = super::object::meta_of(&prev).cloned().unwrap_or_default();
                Staged::Create(obj)
            }
            Some(Staged::Update(prev)) => {
                if version_of(&obj) != version_of(&prev) {
                    self.staged
                        .insert(key.clone(), Staged::Update(prev.clone()));
                    return Err(StoreError::Conflict {
                        kind: super::object::kind_name(key.0),
                        id: key.1,
                        expected: version_of(&obj),
                        actual: version_of(&prev),
                    });
                }
                meta_mut(&mut obj).expect("non-empty object").updated_at = Some(now);
                Staged::Update(obj)
            }
            Some(Staged::Delete(prev)) => {
                self.staged.insert(key.clone(), Staged::Delete(prev));
                return Err(StoreError::NotFound {
                    kind: super::object::kind_name(key.0),
                    id: key.1,
                });
            }
            None => {
                meta_mut(&mut obj).expect("non-empty object").updated_at = Some(now);
                self.stage(key, Staged::Update(obj));
                return Ok(());
            }
        };
        self.staged.insert(key, staged);
        Ok(())
    }

    /// Deletes an object by ID, whatever its version (refused at commit if it is gone).
    pub fn delete<T: Object>(&mut self, id: &str) -> Result<(), StoreError> {
        let mut obj = T::default().into_store();
        set_id(&mut obj, id);
        let key = key_of(&obj)?;
        match self.staged.remove(&key) {
            // Created and deleted in one transaction: nothing to write.
            Some(Staged::Create(_)) => {
                self.order.retain(|k| k != &key);
            }
            Some(Staged::Update(_)) | None => self.stage(key, Staged::Delete(obj)),
            Some(Staged::Delete(prev)) => {
                self.staged.insert(key, Staged::Delete(prev));
            }
        }
        Ok(())
    }

    fn stage(&mut self, key: (ObjectKind, String), staged: Staged) {
        if !self.order.contains(&key) {
            self.order.push(key.clone());
        }
        self.staged.insert(key, staged);
    }

    /// The proposal that carries every staged write, in the order first written.
    pub(crate) fn into_proposal(mut self) -> StoreProposal {
        let actions = self
            .order
            .iter()
            .filter_map(|key| self.staged.remove(key))
            .map(|staged| {
                let (kind, object) = match staged {
                    Staged::Create(o) => (store_action::Kind::Create, o),
                    Staged::Update(o) => (store_action::Kind::Update, o),
                    Staged::Delete(o) => (store_action::Kind::Delete, o),
                };
                StoreAction {
                    kind: kind as i32,
                    object: Some(object),
                }
            })
            .collect();
        StoreProposal { actions }
    }
}

fn key_of(obj: &StoreObject) -> Result<(ObjectKind, String), StoreError> {
    if obj.id().is_empty() {
        return Err(StoreError::Invalid(format!(
            "a {} without an ID cannot be stored; set its id (shoal_proto::ids::new_id())",
            super::object::kind_name(obj.kind())
        )));
    }
    Ok((obj.kind(), obj.id().to_string()))
}

fn set_id(obj: &mut StoreObject, id: &str) {
    use shoal_proto::store_object::Object as Any;
    let slot = match obj.object.as_mut() {
        Some(Any::Cluster(o)) => &mut o.id,
        Some(Any::Node(o)) => &mut o.id,
        Some(Any::Service(o)) => &mut o.id,
        Some(Any::Task(o)) => &mut o.id,
        Some(Any::Network(o)) => &mut o.id,
        Some(Any::Secret(o)) => &mut o.id,
        Some(Any::Config(o)) => &mut o.id,
        None => return,
    };
    *slot = id.to_string();
}
