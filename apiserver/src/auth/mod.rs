//! Who may do what: authentication by bearer token (`authn`).

pub mod authn;
