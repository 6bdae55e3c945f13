//! Stowage CSI node plugin (issue: node plugin; not built yet).
