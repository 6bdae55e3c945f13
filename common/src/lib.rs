//! Small types that the API server, the provisioner and the node plugin all need.

pub mod quantity;
