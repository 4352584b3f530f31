//! Compiles the .proto model with the vendored protoc, so a fresh machine needs no system protoc.
//!
//! Every message and enum derives serde, so `inspect` and `--format json` print the model as is.
//! Enum-typed fields are i32 in prost; the table below routes each through
//! `crate::serde_enum::<module>` so that JSON shows `"running"`, not `512`.

use std::path::PathBuf;

/// (fully qualified field, serde_enum module) for every single enum field of the model.
const ENUM_FIELDS: &[(&str, &str)] = &[
    (".shoal.v1.Certificate.role", "node_role"),
    (".shoal.v1.NodeSpec.desired_role", "node_role"),
    (".shoal.v1.NodeSpec.availability", "node_availability"),
    (".shoal.v1.Node.role", "node_role"),
    (".shoal.v1.NodeStatus.state", "node_state"),
    (".shoal.v1.ManagerStatus.reachability", "reachability"),
    (".shoal.v1.Mount.type", "mount_type"),
    (".shoal.v1.RestartPolicy.condition", "restart_condition"),
    (".shoal.v1.UpdateConfig.failure_action", "failure_action"),
    (".shoal.v1.UpdateConfig.order", "update_order"),
    (".shoal.v1.EndpointSpec.mode", "resolution_mode"),
    (".shoal.v1.PortConfig.protocol", "protocol"),
    (".shoal.v1.PortConfig.publish_mode", "publish_mode"),
    (".shoal.v1.UpdateStatus.state", "update_state"),
    (".shoal.v1.Task.desired_state", "task_state"),
    (".shoal.v1.TaskStatus.state", "task_state"),
    (".shoal.v1.ClusterMembership.state", "membership_state"),
    (".shoal.v1.ClusterMembership.role", "node_role"),
    (".shoal.v1.WatchEvent.action", "watch_action"),
    (".shoal.v1.ContainerSummary.status", "container_run_state"),
    (".shoal.v1.ContainerState.status", "container_run_state"),
    (".shoal.v1.LogEntry.stream", "log_stream"),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from("proto");
    let mut protos = Vec::new();
    // The directory too: a new .proto file must rebuild the model.
    println!("cargo:rerun-if-changed={}", root.join("shoal/v1").display());
    for entry in std::fs::read_dir(root.join("shoal/v1"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "proto") {
            println!("cargo:rerun-if-changed={}", path.display());
            protos.push(path);
        }
    }
    protos.sort();

    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    config.message_attribute(
        ".",
        "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
    );
    config.enum_attribute(
        ".",
        "#[derive(serde::Serialize, serde::Deserialize)] #[serde(rename_all = \"snake_case\")]",
    );
    for (field, module) in ENUM_FIELDS {
        config.field_attribute(
            field,
            format!("#[serde(with = \"crate::serde_enum::{module}\")]"),
        );
    }
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Methods not yet built answer Unimplemented; each issue overrides what it delivers.
        .generate_default_stubs(true)
        .compile_with_config(config, &protos, &[root])?;
    Ok(())
}
