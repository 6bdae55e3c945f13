//! Why `stowage up` could not start (or stopped): one variant per thing that went
//! wrong; main.rs prints it.

use std::path::PathBuf;
use std::time::Duration;

use apiserver::auth::authn::TokenFileError;

use super::claim::ClaimError;
use super::rbac::RbacError;
use super::seed::SeedError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--data {}: {source}", .path.display())]
    Data {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Claim(#[from] ClaimError),
    #[error("create {}: {source}", .path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--rbac {}: {source}", .path.display())]
    ReadRbac {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Rbac(#[from] RbacError),
    #[error(transparent)]
    Seed(#[from] SeedError),
    #[error(transparent)]
    Tokens(#[from] TokenFileError),
    #[error("{}: no token for {user}", .tokens.display())]
    NoToken { tokens: PathBuf, user: String },
    #[error("the API server's CA: {0}")]
    Ca(std::io::Error),
    #[error("this binary's path: {0}")]
    OwnPath(std::io::Error),
    #[error("{what} did not answer within {timeout:?}")]
    NoAnswer { what: String, timeout: Duration },
}
