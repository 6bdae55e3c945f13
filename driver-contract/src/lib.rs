//! The contract between Stowage's processes: what the controller plugin, the node
//! plugin and the provisioner must agree on, and nothing that one of them alone owns.
//!
//! A volume ID written by the controller is parsed by the node plugin and the
//! provisioner ([`ids`], [`export`]); a local volume's data file is named by the
//! controller and opened by the node plugin ([`local_layout`]); both plugins validate
//! capabilities and refuse a second concurrent call on one object the same way
//! ([`request`], [`inflight`]) and serve on a CSI socket ([`socket`]); all of them
//! and the Kubernetes objects name the driver and its topology key alike. Its only
//! workspace dependency is the protocol crate, so depending on it says "speaks the
//! same driver", not "links the controller".

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod error;
pub mod export;
pub mod ids;
pub mod inflight;
pub mod local_layout;
pub mod mount_options;
pub mod request;
pub mod socket;

pub use error::RequestError;

/// The name this driver reports and Kubernetes objects (CSIDriver, StorageClass
/// provisioner, PV sources, snapshot classes) refer to.
pub const DRIVER_NAME: &str = "csi.stowage.io";

/// The topology key of a node-local volume: its value is the node's ID.
pub const TOPOLOGY_NODE_KEY: &str = "topology.stowage.io/node";
