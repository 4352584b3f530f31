//! The services Control API through the real CLI and daemon: refusals that only the API can
//! make (duplicate names, unknown services, checks the CLI leaves to the manager) reach the
//! user as the manager wrote them, naming the field and the fix, and leave nothing behind.

use crate::harness::TestNet;
use crate::harness::cluster::init;

#[test]
fn refusals_name_the_field_and_leave_nothing_behind() {
    let net = TestNet::new("svc-api");
    let mut m = net.node("m1");
    m.start(&[]);
    init(&m, &[]);
    // No image is needed: these checks are about the service objects, not their tasks.
    let id = m.shoal_ok(&["service", "create", "--detach", "--name", "web", "busybox"]);
    let id = id.trim();

    let err = m.shoal_err(&["service", "create", "--detach", "--name", "web", "busybox"]);
    assert!(
        err.contains("--name") && err.contains(id) && err.contains("service rm web"),
        "{err}"
    );
    let err = m.shoal_err(&[
        "service",
        "create",
        "--detach",
        "--constraint",
        "node.zone==a",
        "busybox",
    ]);
    assert!(
        err.contains("--constraint") && err.contains("valid keys"),
        "{err}"
    );
    let err = m.shoal_err(&["service", "create", "--detach", "BusyBox"]);
    assert!(err.contains("IMAGE") && err.contains("lowercase"), "{err}");
    let err = m.shoal_err(&["service", "scale", "--detach", "nope=2"]);
    assert!(err.contains("no such service: nope"), "{err}");

    // Only the first service exists, found by name and by ID prefix alike.
    assert_eq!(m.shoal_ok(&["service", "ls", "-q"]).trim(), id);
    let by_prefix = m.shoal_ok(&["service", "inspect", &id[..6]]);
    assert!(by_prefix.contains("\"web\""), "{by_prefix}");
    m.shoal_ok(&["service", "scale", "--detach", "web=2"]);
    m.shoal_ok(&["service", "rm", "web"]);
    assert!(m.shoal_ok(&["service", "ls", "-q"]).trim().is_empty());
}
