//! Stowage provisioner: the binder that matches PersistentVolumeClaims to
//! PersistentVolumes as kube-controller-manager does, and dynamic provisioning.

pub mod binder;
pub mod error;
