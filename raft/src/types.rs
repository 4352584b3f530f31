//! The openraft type configuration, and the one codec for openraft's own messages.
//!
//! openraft's messages (votes, log entries, membership) are serde types; they are encoded with
//! postcard, a compact non-self-describing format, both on the wire and in the sled log. The
//! Store's payload inside a log entry is not serde-encoded: it is the prost `StoreBatch` (the
//! transactions gathered into that entry), carried as opaque bytes, so the model keeps one schema (the .proto files) and the serde
//! attributes meant for JSON output never affect what is replicated.

use std::io::Cursor;

use prost::Message;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use shoal_proto::{StoreBatch, StoreCommit};

/// A Raft node ID. Managers' `ManagerStatus.raft_id` carries it.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Shoal's openraft types: a log payload is a batch of Store transactions, its result the
    /// commit of each (in the same order; empty for blank and membership entries).
    pub TypeConfig:
        D = Command,
        R = Vec<StoreCommit>,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The application payload of a log entry: the Store transactions committed together.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Command(pub StoreBatch);

impl Serialize for Command {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0.encode_to_vec())
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = Command;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a prost-encoded StoreBatch")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Command, E> {
                StoreBatch::decode(v)
                    .map(Command)
                    .map_err(|e| E::custom(format!("bad StoreBatch: {e}")))
            }
            // Self-describing formats (JSON) represent bytes as a sequence of numbers.
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Command, A::Error> {
                let mut buf = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    buf.push(b);
                }
                self.visit_bytes(&buf)
            }
        }
        d.deserialize_bytes(BytesVisitor)
    }
}

/// Encodes an openraft message (postcard).
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_allocvec(value)
}

/// Decodes an openraft message (postcard).
pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{StoreAction, StoreObject, StoreProposal, Task, store_object};

    #[test]
    fn command_round_trips_through_postcard_inside_an_entry() {
        let proposal = |id: &str| StoreProposal {
            actions: vec![StoreAction {
                kind: 0,
                object: Some(StoreObject {
                    object: Some(store_object::Object::Task(Task {
                        id: id.into(),
                        desired_state: shoal_proto::TaskState::Running as i32,
                        ..Default::default()
                    })),
                }),
            }],
        };
        let cmd = Command(StoreBatch {
            proposals: vec![proposal("t1"), proposal("t2")],
        });
        let entry = openraft::Entry::<TypeConfig> {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(3, 1), 7),
            payload: openraft::EntryPayload::Normal(cmd.clone()),
        };
        let bytes = encode(&entry).unwrap();
        let back: openraft::Entry<TypeConfig> = decode(&bytes).unwrap();
        assert_eq!(back.log_id, entry.log_id);
        match back.payload {
            openraft::EntryPayload::Normal(c) => assert_eq!(c, cmd),
            other => panic!("unexpected payload {other:?}"),
        }
    }
}
