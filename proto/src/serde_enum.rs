//! serde adapters for enum-typed fields, which prost stores as i32.
//!
//! JSON output (`inspect`, `--format json`) shows the enum's short name in lowercase
//! (`"running"`, `"drain"`), the way Docker's API does; input accepts that name, the full
//! proto name, or the number. Unknown numbers print as numbers so nothing is lost.

use serde::{Deserialize, Deserializer, Serializer};

/// Accepts either a name or a number when reading JSON.
#[derive(Deserialize)]
#[serde(untagged)]
enum NameOrNumber {
    Name(String),
    Number(i32),
}

/// Strips the proto prefix ("TASK_STATE_RUNNING" -> "running").
fn short_name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
}

macro_rules! enum_field {
    ($module:ident, $ty:ty, $prefix:literal) => {
        #[doc = concat!("serde for i32 fields holding `", stringify!($ty), "`.")]
        pub mod $module {
            use super::*;

            pub fn serialize<S: Serializer>(value: &i32, s: S) -> Result<S::Ok, S::Error> {
                match <$ty>::try_from(*value) {
                    Ok(e) => s.serialize_str(&short_name(e.as_str_name(), $prefix)),
                    Err(_) => s.serialize_i32(*value),
                }
            }

            pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
                match NameOrNumber::deserialize(d)? {
                    NameOrNumber::Number(n) => Ok(n),
                    NameOrNumber::Name(name) => {
                        let upper = name.to_ascii_uppercase();
                        <$ty>::from_str_name(&upper)
                            .or_else(|| <$ty>::from_str_name(&format!("{}{}", $prefix, upper)))
                            .map(|e| e as i32)
                            .ok_or_else(|| {
                                serde::de::Error::custom(format!(
                                    "unknown {} {name:?}",
                                    stringify!($module)
                                ))
                            })
                    }
                }
            }
        }
    };
}

enum_field!(node_role, crate::NodeRole, "NODE_ROLE_");
enum_field!(
    node_availability,
    crate::NodeAvailability,
    "NODE_AVAILABILITY_"
);
enum_field!(node_state, crate::node_status::State, "STATE_");
enum_field!(
    reachability,
    crate::manager_status::Reachability,
    "REACHABILITY_"
);
enum_field!(mount_type, crate::mount::Type, "TYPE_");
enum_field!(
    restart_condition,
    crate::restart_policy::Condition,
    "CONDITION_"
);
enum_field!(
    failure_action,
    crate::update_config::FailureAction,
    "FAILURE_ACTION_"
);
enum_field!(update_order, crate::update_config::Order, "ORDER_");
enum_field!(
    resolution_mode,
    crate::endpoint_spec::ResolutionMode,
    "RESOLUTION_MODE_"
);
enum_field!(protocol, crate::port_config::Protocol, "PROTOCOL_");
enum_field!(
    publish_mode,
    crate::port_config::PublishMode,
    "PUBLISH_MODE_"
);
enum_field!(update_state, crate::update_status::State, "STATE_");
enum_field!(task_state, crate::TaskState, "TASK_STATE_");
enum_field!(membership_state, crate::cluster_membership::State, "STATE_");
enum_field!(watch_action, crate::watch_event::Action, "ACTION_");
enum_field!(
    container_run_state,
    crate::ContainerRunState,
    "CONTAINER_RUN_STATE_"
);
enum_field!(log_stream, crate::log_entry::Stream, "STREAM_");
