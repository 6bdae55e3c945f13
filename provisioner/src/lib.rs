//! Stowage provisioner and binder (issue: binder; not built yet).
