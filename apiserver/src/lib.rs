//! Embedded Kubernetes-compatible API server (issue: embedded API; not built yet).
