//! Self-describing, deterministic volume and snapshot IDs.
//!
//! `local:<key>:<node>` and `nfs:<key>:<server>/<share>` (`local-snap:`/`nfs-snap:`
//! for snapshots). The key is a UUIDv5 of the CO's name, so a retried create
//! finds its earlier result; the rest tells any process where the data lives.

use std::fmt;

use uuid::Uuid;

use crate::error::{RequestError, Result};
use crate::export::Export;

/// CSI's limit for string fields, IDs included.
pub const MAX_ID_LEN: usize = 128;

const VOLUME_NAMESPACE: Uuid = Uuid::from_u128(0x5b0a_9e3e_8f2d_4c71_9a6b_3d1e_7c40_a001);
const SNAPSHOT_NAMESPACE: Uuid = Uuid::from_u128(0x5b0a_9e3e_8f2d_4c71_9a6b_3d1e_7c40_a002);
const GROUP_NAMESPACE: Uuid = Uuid::from_u128(0x5b0a_9e3e_8f2d_4c71_9a6b_3d1e_7c40_a003);

/// 32 hex digits naming one volume or snapshot within its location.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(String);

impl Key {
    /// The key of the volume the CO names `name`.
    pub fn for_volume(name: &str) -> Self {
        Self(
            Uuid::new_v5(&VOLUME_NAMESPACE, name.as_bytes())
                .simple()
                .to_string(),
        )
    }

    /// The key of the group snapshot the CO names `name`.
    pub fn for_group_snapshot(name: &str) -> Self {
        Self(
            Uuid::new_v5(&GROUP_NAMESPACE, name.as_bytes())
                .simple()
                .to_string(),
        )
    }

    /// The key of the snapshot the CO names `name`.
    pub fn for_snapshot(name: &str) -> Self {
        Self(
            Uuid::new_v5(&SNAPSHOT_NAMESPACE, name.as_bytes())
                .simple()
                .to_string(),
        )
    }

    fn parse(s: &str) -> Option<Self> {
        (s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        .then(|| Self(s.to_string()))
    }

    /// The 32 hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a volume's or snapshot's data lives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Location {
    /// Under the local root of one node.
    Local {
        /// The node's ID (its Kubernetes name).
        node: String,
    },
    /// On an NFS export.
    Nfs(Export),
}

/// A parsed volume ID.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VolumeId {
    /// Which volume at its location.
    pub key: Key,
    /// Where its data lives.
    pub location: Location,
}

/// A parsed snapshot ID.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotId {
    /// Which snapshot at its location.
    pub key: Key,
    /// Where its data lives (where its source volume lives).
    pub location: Location,
}

fn format_id(
    f: &mut fmt::Formatter<'_>,
    suffix: &str,
    key: &Key,
    location: &Location,
) -> fmt::Result {
    match location {
        Location::Local { node } => write!(f, "local{suffix}:{key}:{node}"),
        Location::Nfs(export) => write!(f, "nfs{suffix}:{key}:{export}"),
    }
}

/// The longer kind prefix, `-snap`: a volume ID leaves room for it, so every volume
/// the driver creates can be snapshotted within the length limit.
const SNAPSHOT_SUFFIX: &str = "-snap";

fn parse_id(s: &str, suffix: &str) -> Option<(Key, Location)> {
    if s.len() > MAX_ID_LEN {
        return None;
    }
    let (kind, rest) = s.split_once(':')?;
    let (key, place) = rest.split_once(':')?;
    let key = Key::parse(key)?;
    let location = match kind.strip_suffix(suffix)? {
        "local" if valid_node_id(place) => Location::Local {
            node: place.to_string(),
        },
        "nfs" => Location::Nfs(Export::parse_compact(place).ok()?),
        _ => return None,
    };
    Some((key, location))
}

impl VolumeId {
    /// Parses an ID this driver issued; `None` for anything else, a different spelling of
    /// an issued ID included (`host:111/share/` for `host/share`), so that one volume has
    /// one ID (the in-flight guards key on it).
    pub fn parse(s: &str) -> Option<Self> {
        parse_id(s, "")
            .map(|(key, location)| Self { key, location })
            .filter(|id| id.to_string() == s)
    }

    /// Builds the ID for a new volume, refusing locations too long to fit, with room
    /// for the longer prefix of its snapshots' IDs.
    pub fn new(key: Key, location: Location) -> Result<Self> {
        let id = Self { key, location };
        let len = id.to_string().len();
        if len + SNAPSHOT_SUFFIX.len() > MAX_ID_LEN {
            return Err(RequestError::invalid(
                "parameters",
                format!(
                    "server and share are too long: the volume ID would be {len} bytes, the limit is {}",
                    MAX_ID_LEN - SNAPSHOT_SUFFIX.len()
                ),
            ));
        }
        Ok(id)
    }
}

impl SnapshotId {
    /// Parses an ID this driver issued, as [`VolumeId::parse`] does.
    pub fn parse(s: &str) -> Option<Self> {
        parse_id(s, SNAPSHOT_SUFFIX)
            .map(|(key, location)| Self { key, location })
            .filter(|id| id.to_string() == s)
    }

    /// Builds the ID for a new snapshot; a volume created before volume IDs left room
    /// for the prefix may be too long to snapshot.
    pub fn new(key: Key, location: Location) -> Result<Self> {
        let id = Self { key, location };
        let len = id.to_string().len();
        if len > MAX_ID_LEN {
            return Err(RequestError::invalid(
                "source_volume_id",
                format!(
                    "is too long to snapshot: the snapshot ID would be {len} bytes, the limit is {MAX_ID_LEN}"
                ),
            ));
        }
        Ok(id)
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        format_id(f, "", &self.key, &self.location)
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        format_id(f, "-snap", &self.key, &self.location)
    }
}

/// A volume group snapshot: `local-grp:<key>:<node>` or `nfs-grp:<key>:<export>`. Its
/// members are snapshots at the same location whose records name this ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnapshotId {
    /// Which group snapshot at its location.
    pub key: Key,
    /// Where its members live.
    pub location: Location,
}

/// Not longer than `-snap`, so a group ID fits wherever its members' IDs do.
const GROUP_SUFFIX: &str = "-grp";

impl GroupSnapshotId {
    /// Parses an ID this driver issued, as [`VolumeId::parse`] does.
    pub fn parse(s: &str) -> Option<Self> {
        parse_id(s, GROUP_SUFFIX)
            .map(|(key, location)| Self { key, location })
            .filter(|id| id.to_string() == s)
    }
}

impl fmt::Display for GroupSnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        format_id(f, GROUP_SUFFIX, &self.key, &self.location)
    }
}

/// The key part of an ID this driver issued (`kind:key:place`), without parsing the place.
pub fn key_of(id: &str) -> &str {
    id.split(':').nth(1).unwrap_or_default()
}

/// Node IDs are Kubernetes node names: DNS subdomains, short enough that an ID fits;
/// never `.` or `..`, which as a path component would name another directory.
pub fn valid_node_id(node: &str) -> bool {
    !node.is_empty()
        && node != "."
        && node != ".."
        && node.len() <= MAX_ID_LEN - "local-snap:".len() - 33
        && node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

/// Validates a CO-chosen name (volume or snapshot), naming the field on failure.
pub fn validate_name(field: &'static str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(RequestError::invalid(field, "must not be empty"));
    }
    if name.len() > MAX_ID_LEN {
        return Err(RequestError::invalid(
            field,
            format!("is {} bytes, the limit is {MAX_ID_LEN}", name.len()),
        ));
    }
    // The node plugin names an ephemeral volume's directory after its ID: `.` would be
    // the directory of them all.
    if name == "." || name.contains('/') || name.contains("..") {
        return Err(RequestError::invalid(
            field,
            "must not be '.' or contain '/' or '..'",
        ));
    }
    // The spec bans C0 controls other than common whitespace, DEL and C1 controls.
    if name.chars().any(|c| {
        matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{7f}'..='\u{9f}')
    }) {
        return Err(RequestError::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// Validates an ID field's presence and length; whether it parses is the caller's business.
pub fn require_id<'a>(field: &'static str, id: &'a str) -> Result<&'a str> {
    if id.is_empty() {
        return Err(RequestError::invalid(field, "must not be empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(RequestError::invalid(
            field,
            format!("is {} bytes, the limit is {MAX_ID_LEN}", id.len()),
        ));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_ids_round_trip_and_are_deterministic() {
        let local = VolumeId::new(
            Key::for_volume("pvc-1"),
            Location::Local {
                node: "node-a.example".into(),
            },
        )
        .expect("fits");
        assert_eq!(VolumeId::parse(&local.to_string()), Some(local.clone()));
        assert_eq!(Key::for_volume("pvc-1"), local.key);
        assert_ne!(Key::for_volume("pvc-2"), local.key);

        let export = Export::parse("[fd00::1]:2049", "/exports/k8s").expect("valid");
        let nfs = VolumeId::new(Key::for_volume("pvc-1"), Location::Nfs(export)).expect("fits");
        assert_eq!(VolumeId::parse(&nfs.to_string()), Some(nfs.clone()));
        assert!(nfs.to_string().len() <= MAX_ID_LEN);
    }

    #[test]
    fn volume_and_snapshot_ids_do_not_mix() {
        let snap = SnapshotId::new(Key::for_snapshot("s"), Location::Local { node: "n".into() })
            .expect("fits");
        assert!(VolumeId::parse(&snap.to_string()).is_none());
        assert!(SnapshotId::parse(&snap.to_string()).is_some());
    }

    #[test]
    fn foreign_ids_do_not_parse() {
        for id in [
            "",
            "abc",
            "local:xyz:node",
            "local:0123:node",
            "other:00000000000000000000000000000000:n",
            "local:00000000000000000000000000000000:bad/node",
            "local:00000000000000000000000000000000:..",
            // Other spellings of issued IDs (a fuzzer found they formatted differently).
            "nfs:00000000000000000000000000000000:h:111/share",
            "nfs:00000000000000000000000000000000:h/share/",
        ] {
            assert!(VolumeId::parse(id).is_none(), "{id}");
        }
    }

    #[test]
    fn an_overlong_location_is_refused() {
        let export = Export::parse("h", &format!("/{}", "x".repeat(120))).expect("valid");
        assert!(VolumeId::new(Key::for_volume("a"), Location::Nfs(export)).is_err());
    }

    #[test]
    fn every_volume_created_can_be_snapshotted() {
        // A fuzzer found volume IDs of 124 to 128 bytes, whose snapshot IDs were too long
        // to parse (DeleteSnapshot then took them for foreign and left the copy behind).
        for len in 1..=120 {
            let export = Export::parse("h", &format!("/{}", "x".repeat(len))).expect("valid");
            let location = Location::Nfs(export);
            if VolumeId::new(Key::for_volume("a"), location.clone()).is_ok() {
                let snapshot = SnapshotId::new(Key::for_snapshot("s"), location).expect("fits");
                assert_eq!(SnapshotId::parse(&snapshot.to_string()), Some(snapshot));
            }
        }
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("name", "pvc-0a1b").is_ok());
        // "." was the ephemeral volumes' own directory (a fuzzer found it).
        for bad in ["", ".", "a/b", "..", "a\0b", &"x".repeat(129)] {
            assert!(validate_name("name", bad).is_err(), "{bad:?}");
        }
    }
}
