//! Every variant's code and message, and every NFS status's code.

use super::*;
use driver_contract::RequestError;

fn s(text: &str) -> String {
    text.to_string()
}

#[test]
fn every_variant_has_its_code_and_names_its_object() {
    // (error, code, a part of the message the client reads)
    let cases = [
        (
            Error::invalid("name", "empty"),
            Code::InvalidArgument,
            "name: empty",
        ),
        (
            Error::from(crate::params::ParamError::Required("server")),
            Code::InvalidArgument,
            "parameters: server is required for type nfs",
        ),
        (
            Error::from(crate::params::MutableParamError::NotMutable(s("size"))),
            Code::InvalidArgument,
            "mutable_parameters: \"size\" is not a mutable parameter",
        ),
        (
            Error::VolumeNotFound { id: s("local:k:n") },
            Code::NotFound,
            "volume local:k:n does not exist",
        ),
        (
            Error::SnapshotNotFound {
                id: s("local-snap:k:n"),
            },
            Code::NotFound,
            "snapshot local-snap:k:n",
        ),
        (
            Error::GroupSnapshotNotFound { id: s("g") },
            Code::NotFound,
            "group snapshot g",
        ),
        (
            Error::SourceVolumeNotFound { id: s("v") },
            Code::NotFound,
            "source volume v",
        ),
        (
            Error::SourceSnapshotNotFound { id: s("s") },
            Code::NotFound,
            "source snapshot s",
        ),
        (
            Error::NotOnNode {
                node: s("n2"),
                volume: s("local:k:n1"),
            },
            Code::NotFound,
            "node n2 does not hold local volume local:k:n1",
        ),
        (
            Error::DataGone {
                what: "source",
                path: s("a/b"),
            },
            Code::NotFound,
            "source data a/b is gone",
        ),
        (
            Error::NameTaken {
                kind: "volume",
                name: s("pvc-1"),
                conflict: s("with a different capacity"),
            },
            Code::AlreadyExists,
            "volume pvc-1 exists with a different capacity",
        ),
        (
            Error::PublishedOtherwise {
                volume: s("v"),
                node: s("n"),
            },
            Code::AlreadyExists,
            "published to node n with other options",
        ),
        (
            Error::NotPublishable {
                volume: s("v"),
                reason: s("is single-node and already published to node n"),
            },
            Code::FailedPrecondition,
            "volume v is single-node",
        ),
        (
            Error::VolumeInUse {
                id: s("v"),
                nodes: vec![s("n1"), s("n2")],
            },
            Code::FailedPrecondition,
            "volume v is still published to n1, n2",
        ),
        (
            Error::OtherNode {
                node: s("n1"),
                serves: Some(s("n2")),
            },
            Code::FailedPrecondition,
            "lives on node n1; this controller serves node n2",
        ),
        (
            Error::OtherNode {
                node: s("n1"),
                serves: None,
            },
            Code::FailedPrecondition,
            "this controller serves no local volumes",
        ),
        (
            Error::SnapshotInGroup {
                id: s("s"),
                group: s("g"),
            },
            Code::FailedPrecondition,
            "snapshot s belongs to group snapshot g",
        ),
        (
            Error::QuotaUnavailable {
                node: s("n"),
                why: s("not XFS"),
            },
            Code::FailedPrecondition,
            "quota volume on node n without project quotas: not XFS",
        ),
        (
            Error::QuotaPathUnnameable { path: s("/a b") },
            Code::FailedPrecondition,
            "/a b cannot be named to xfs_quota",
        ),
        (
            Error::RootHeld {
                lock: s("/r/records.lock"),
                errno: s("EWOULDBLOCK"),
            },
            Code::FailedPrecondition,
            "another process holds /r/records.lock",
        ),
        (
            Error::SourceTooLarge {
                source_bytes: 10,
                limit: 5,
            },
            Code::OutOfRange,
            "the source holds 10 bytes, more than limit_bytes 5",
        ),
        (
            Error::CannotShrink {
                capacity: 10,
                limit: 5,
            },
            Code::OutOfRange,
            "volume is 10 bytes and cannot shrink to 5",
        ),
        (
            Error::from(RequestError::CapacityUnmet {
                required: 1,
                limit: 2,
                minimum: 4096,
                granule: 4096,
            }),
            Code::OutOfRange,
            "[1, 2]",
        ),
        (
            Error::from(RequestError::OperationPending {
                what: s("volume v"),
            }),
            Code::Aborted,
            "an operation for volume v is already in progress",
        ),
        (
            Error::StaleToken { token: s("bogus") },
            Code::Aborted,
            "starting_token \"bogus\"",
        ),
        (
            Error::NoSpace {
                node: s("n"),
                bytes: 7,
            },
            Code::ResourceExhausted,
            "node n has less than 7 bytes free",
        ),
        (
            Error::ProjectIdsExhausted,
            Code::ResourceExhausted,
            "project id",
        ),
        (
            Error::TopologyUnreachable { node: s("n") },
            Code::ResourceExhausted,
            "admits node n",
        ),
        (
            Error::AttachLimit {
                node: s("n"),
                published: 3,
            },
            Code::ResourceExhausted,
            "node n already has 3 volumes published",
        ),
        (
            Error::AttachDisabled,
            Code::Unimplemented,
            "--enable-attach",
        ),
        (
            Error::io("write x", std::io::Error::from_raw_os_error(28)),
            Code::ResourceExhausted,
            "write x",
        ),
        (
            Error::io("write x", std::io::Error::from_raw_os_error(122)),
            Code::ResourceExhausted,
            "write x",
        ),
        (
            Error::io("stat x", std::io::Error::other("boom")),
            Code::Internal,
            "stat x: boom",
        ),
        (
            Error::CorruptMetadata {
                path: s("p"),
                reason: s("r"),
            },
            Code::Internal,
            "corrupt metadata p: r",
        ),
        (
            Error::Tool {
                path: "/r/v.img".into(),
                source: ToolError::NotInstalled(stowage_common::tool::MKFS_EXT4),
            },
            Code::Internal,
            "/r/v.img: mkfs.ext4 is not installed (Debian package e2fsprogs)",
        ),
        (
            Error::Tool {
                path: "/r".into(),
                source: ToolError::Failed(stowage_common::tool::ToolFailure {
                    program: "xfs_quota",
                    status: Some(1),
                    stderr: "no such project".into(),
                }),
            },
            Code::Internal,
            "xfs_quota exited 1: no such project",
        ),
        (
            Error::QuotaLimitNotApplied {
                project: 7,
                bytes: 100,
                dir: "/r/v".into(),
                reported: 50,
            },
            Code::Internal,
            "project 7's limit to 100 bytes, but /r/v reports 50",
        ),
        (
            Error::Nfs(NfsError::Unreachable(s("down"))),
            Code::Unavailable,
            "down",
        ),
        (
            Error::Nfs(NfsError::status("CREATE", nfsstat3::NFS3ERR_NOSPC)),
            Code::ResourceExhausted,
            "CREATE",
        ),
    ];
    for (error, code, text) in cases {
        let status = Status::from(error);
        assert_eq!(status.code(), code, "{}", status.message());
        assert!(
            status.message().contains(text),
            "{:?} lacks {text:?}",
            status.message()
        );
    }
}

#[test]
fn every_nfs_status_has_its_code() {
    use nfsstat3::*;
    let cases = [
        (NFS3_OK, Code::Internal),
        (NFS3ERR_PERM, Code::PermissionDenied),
        (NFS3ERR_NOENT, Code::Internal),
        (NFS3ERR_IO, Code::Internal),
        (NFS3ERR_NXIO, Code::Internal),
        (NFS3ERR_ACCES, Code::PermissionDenied),
        (NFS3ERR_EXIST, Code::Internal),
        (NFS3ERR_XDEV, Code::Internal),
        (NFS3ERR_NODEV, Code::Internal),
        (NFS3ERR_NOTDIR, Code::Internal),
        (NFS3ERR_ISDIR, Code::Internal),
        (NFS3ERR_INVAL, Code::Internal),
        (NFS3ERR_FBIG, Code::Internal),
        (NFS3ERR_NOSPC, Code::ResourceExhausted),
        (NFS3ERR_ROFS, Code::PermissionDenied),
        (NFS3ERR_MLINK, Code::Internal),
        (NFS3ERR_NAMETOOLONG, Code::Internal),
        (NFS3ERR_NOTEMPTY, Code::Internal),
        (NFS3ERR_DQUOT, Code::ResourceExhausted),
        (NFS3ERR_STALE, Code::Unavailable),
        (NFS3ERR_REMOTE, Code::Internal),
        (NFS3ERR_BADHANDLE, Code::Internal),
        (NFS3ERR_NOT_SYNC, Code::Internal),
        (NFS3ERR_BAD_COOKIE, Code::Internal),
        (NFS3ERR_NOTSUPP, Code::Internal),
        (NFS3ERR_TOOSMALL, Code::Internal),
        (NFS3ERR_SERVERFAULT, Code::Internal),
        (NFS3ERR_BADTYPE, Code::Internal),
        (NFS3ERR_JUKEBOX, Code::Unavailable),
    ];
    for (status, code) in cases {
        assert_eq!(
            Error::Nfs(NfsError::status("LOOKUP", status)).code(),
            code,
            "{status:?}"
        );
    }
}

#[test]
fn invalid_argument_names_the_field() {
    let status = Status::from(Error::invalid("capacity_range", "limit below required"));
    assert!(
        status.message().starts_with("capacity_range:"),
        "{}",
        status.message()
    );
}
