//! The provisioner's error type.

/// Why a controller stopped, or one object's work was deferred to a later pass.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API request failed.
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// A cache's watch ended before it had listed.
    #[error("a watch cache closed before it was ready")]
    CacheClosed,
    /// Another instance took the lease: this one exits and a fresh one campaigns.
    #[error("lost the leader lease; exiting so that a fresh instance campaigns")]
    LostLeadership,
}

/// The provisioner's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the API refused a write because the object changed since it was read
    /// (HTTP 409 on an update): optimistic concurrency, decided again from the new object.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Kube(kube::Error::Api(status)) if status.is_conflict())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    #[test]
    fn only_a_refused_update_is_a_conflict() {
        let api = |reason: &str, code: u16| {
            Error::Kube(kube::Error::Api(
                Status::failure("refused", reason).with_code(code).boxed(),
            ))
        };
        let cases = [
            ("an update of a changed object", api("Conflict", 409), true),
            (
                "a create of an object that exists",
                api("AlreadyExists", 409),
                false,
            ),
            ("a missing object", api("NotFound", 404), false),
            ("a cache that closed", Error::CacheClosed, false),
        ];
        for (what, error, conflict) in cases {
            assert_eq!(error.is_conflict(), conflict, "{what}");
        }
    }
}
