//! shoal-overlay: node-local networking for containers.
//!
//! VXLAN + bridge + veth via rtnetlink, peer FDB/ARP entries, nftables virtual-IP load
//! balancing, embedded DNS and the ingress routing mesh. It depends only on shoal-proto among
//! Shoal's crates; the worker drives it, and it must not depend on the worker or the manager.

#![forbid(unsafe_code)]
