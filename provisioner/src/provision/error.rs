//! Why a claim got no volume, or its volume no growth, on one attempt: each kind by
//! what went wrong, and whether trying the same claim and class again can help.

use driver_contract::DRIVER_NAME;

use super::request::Unprovisionable;
use super::secrets::SecretError;
use super::snapshot::SnapshotError;

/// Why what a clone or restore is filled from cannot be used yet.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The claim to clone is not in the cache.
    #[error("source claim {namespace}/{name} does not exist")]
    ClaimMissing {
        /// The clone's namespace, which the source shares.
        namespace: String,
        /// The source claim's name.
        name: String,
    },
    /// The claim to clone has no volume yet.
    #[error("source claim {namespace}/{name} is not bound yet")]
    ClaimUnbound {
        /// The clone's namespace, which the source shares.
        namespace: String,
        /// The source claim's name.
        name: String,
    },
    /// The claim to clone is bound to a volume of another driver (or none cached).
    #[error("source claim {namespace}/{name} is not a volume of {DRIVER_NAME}")]
    ClaimForeign {
        /// The clone's namespace, which the source shares.
        namespace: String,
        /// The source claim's name.
        name: String,
    },
    /// The snapshot to restore is not usable yet.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A data source kind the driver cannot fill from.
    #[error(
        "data source of kind {0} is not supported: only PersistentVolumeClaim and snapshot.storage.k8s.io/VolumeSnapshot are"
    )]
    Unsupported(String),
}

/// Why provisioning a claim failed this time; the claim's `ProvisioningFailed`
/// event says it.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// What the claim is filled from is not ready.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The node has no room for the claim.
    #[error(transparent)]
    NoRoom(#[from] crate::capacity::room::NoRoom),
    /// The claim or its class asks for what cannot be made.
    #[error(transparent)]
    Unprovisionable(#[from] Unprovisionable),
    /// The class's provisioner secret could not be read.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// This instance has nowhere to send CreateVolume.
    #[error("no CSI endpoint is configured to call CreateVolume on")]
    NoCsiEndpoint,
    /// The driver refused the request in a way it will repeat.
    #[error("{}", .0.message())]
    Refused(tonic::Status),
    /// CreateVolume failed in a way a retry may not.
    #[error("rpc error: code = {:?} desc = {}", .0.code(), .0.message())]
    CreateVolume(tonic::Status),
    /// The volume was made but its PersistentVolume could not be written.
    #[error("creating PersistentVolume {name}: {error}")]
    CreatePv {
        /// The volume's name.
        name: String,
        /// The API's answer.
        error: kube::Error,
    },
}

impl ProvisionError {
    /// CreateVolume's failure, told apart by whether the same request would fail
    /// the same way.
    pub fn from_create_volume(status: tonic::Status) -> Self {
        if is_final(status.code()) {
            Self::Refused(status)
        } else {
            Self::CreateVolume(status)
        }
    }

    /// Whether the same claim and class would fail the same way: then the claim
    /// waits for either to change instead of backing off and trying again.
    pub fn is_final(&self) -> bool {
        match self {
            Self::Unprovisionable(_) | Self::Refused(_) => true,
            Self::Source(_)
            | Self::NoRoom(_)
            | Self::Secret(_)
            | Self::NoCsiEndpoint
            | Self::CreateVolume(_)
            | Self::CreatePv { .. } => false,
        }
    }
}

/// CSI codes after which the same request will fail the same way.
fn is_final(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::InvalidArgument
            | tonic::Code::AlreadyExists
            | tonic::Code::OutOfRange
            | tonic::Code::Unimplemented
            | tonic::Code::PermissionDenied
    )
}

/// Why growing a volume failed; its `VolumeResizeFailed` event says it.
#[derive(Debug, thiserror::Error)]
pub enum ExpandError {
    /// The volume's expand secret could not be read.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The driver's ControllerExpandVolume failed.
    #[error("{}", .0.message())]
    Csi(tonic::Status),
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::{Code, Status};

    #[test]
    fn only_what_would_fail_the_same_way_is_final() {
        let cases = [
            (
                ProvisionError::Unprovisionable(Unprovisionable::NoStorage),
                true,
                "the claim requests no storage",
            ),
            (
                ProvisionError::from_create_volume(Status::invalid_argument("colour: unknown")),
                true,
                "colour: unknown",
            ),
            (
                ProvisionError::from_create_volume(Status::already_exists("other size")),
                true,
                "other size",
            ),
            (
                ProvisionError::from_create_volume(Status::unavailable("restarting")),
                false,
                "rpc error: code = Unavailable desc = restarting",
            ),
            (
                ProvisionError::from_create_volume(Status::resource_exhausted("full")),
                false,
                "rpc error: code = ResourceExhausted desc = full",
            ),
            (
                ProvisionError::Source(SourceError::ClaimUnbound {
                    namespace: "apps".into(),
                    name: "origin".into(),
                }),
                false,
                "source claim apps/origin is not bound yet",
            ),
            (
                ProvisionError::Source(SourceError::Unsupported("example.com/Backup".into())),
                false,
                "data source of kind example.com/Backup is not supported: only \
                 PersistentVolumeClaim and snapshot.storage.k8s.io/VolumeSnapshot are",
            ),
            (
                ProvisionError::NoRoom(crate::capacity::room::NoRoom {
                    class: "fast".into(),
                    node: "n1".into(),
                    room: 10,
                    request: 11,
                }),
                false,
                "node n1 has room for 10 bytes of class fast (its CSIStorageCapacity), \
                 the claim asks for 11: free space there or use another node",
            ),
            (
                ProvisionError::NoCsiEndpoint,
                false,
                "no CSI endpoint is configured to call CreateVolume on",
            ),
        ];
        for (error, is_final, message) in cases {
            assert_eq!(error.is_final(), is_final, "{error}");
            assert_eq!(error.to_string(), message);
        }
    }

    #[test]
    fn a_driver_code_is_final_only_when_the_same_request_fails_the_same_way() {
        let cases = [
            (Code::InvalidArgument, true),
            (Code::AlreadyExists, true),
            (Code::OutOfRange, true),
            (Code::Unimplemented, true),
            (Code::PermissionDenied, true),
            (Code::Unavailable, false),
            (Code::Aborted, false),
            (Code::DeadlineExceeded, false),
            (Code::Internal, false),
            (Code::ResourceExhausted, false),
            (Code::NotFound, false),
        ];
        for (code, refused) in cases {
            let error = ProvisionError::from_create_volume(Status::new(code, "no"));
            assert_eq!(
                matches!(error, ProvisionError::Refused(_)),
                refused,
                "{code:?}"
            );
            assert_eq!(error.is_final(), refused, "{code:?}");
        }
    }
}
