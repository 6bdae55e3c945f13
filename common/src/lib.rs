//! Small types that the API server, the provisioner, the controller and the node plugin
//! need: Kubernetes quantities, the kernel's mount table, and host programs run with
//! their exit status checked.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod loop_device;
pub mod mountinfo;
pub mod quantity;
pub mod tool;
