//! One read interface over the Store's views and transactions, so lookups (by ID, name or
//! prefix) are written once and used both in plain reads and inside `update` closures.

use shoal_raft::{By, Object, Snapshot, Tx, View};

pub trait Read {
    fn get<T: Object>(&self, id: &str) -> Option<T>;
    fn find<T: Object>(&self, by: By<'_>) -> Vec<T>;
    fn list<T: Object>(&self) -> Vec<T>;
}

impl Read for View<'_> {
    fn get<T: Object>(&self, id: &str) -> Option<T> {
        View::get(self, id)
    }
    fn find<T: Object>(&self, by: By<'_>) -> Vec<T> {
        View::find(self, by)
    }
    fn list<T: Object>(&self) -> Vec<T> {
        View::list(self)
    }
}

impl Read for Tx<'_> {
    fn get<T: Object>(&self, id: &str) -> Option<T> {
        Tx::get(self, id)
    }
    fn find<T: Object>(&self, by: By<'_>) -> Vec<T> {
        Tx::find(self, by)
    }
    fn list<T: Object>(&self) -> Vec<T> {
        Tx::list(self)
    }
}

impl Read for Snapshot {
    fn get<T: Object>(&self, id: &str) -> Option<T> {
        Snapshot::get(self, id)
    }
    fn find<T: Object>(&self, by: By<'_>) -> Vec<T> {
        Snapshot::find(self, by)
    }
    fn list<T: Object>(&self) -> Vec<T> {
        Snapshot::list(self)
    }
}
