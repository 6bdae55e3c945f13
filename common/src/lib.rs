//! Small types that the API server, the provisioner, the controller and the node plugin
//! need: Kubernetes quantities, and the kernel's mount table.

pub mod loop_device;
pub mod mountinfo;
pub mod quantity;
