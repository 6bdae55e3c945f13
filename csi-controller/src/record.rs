//! The metadata kept beside each volume and snapshot: what was asked, what was made.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use csi_proto::v1::volume_content_source::{SnapshotSource, Type as SourceType, VolumeSource};
use csi_proto::v1::{Topology, Volume, VolumeContentSource};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::params::OnDelete;
use driver_contract::request::AccessType;

/// Where a new volume's content came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ContentSource {
    /// Restored from this snapshot ID.
    Snapshot(String),
    /// Cloned from this volume ID.
    Volume(String),
}

impl ContentSource {
    /// The request's content source; InvalidArgument when it names neither kind.
    pub fn from_csi(source: Option<&VolumeContentSource>) -> Result<Option<Self>> {
        let Some(source) = source else {
            return Ok(None);
        };
        match &source.r#type {
            Some(SourceType::Snapshot(s)) => Ok(Some(Self::Snapshot(s.snapshot_id.clone()))),
            Some(SourceType::Volume(v)) => Ok(Some(Self::Volume(v.volume_id.clone()))),
            None => Err(Error::invalid(
                "volume_content_source",
                "must name a snapshot or a volume",
            )),
        }
    }

    /// As CSI's message.
    pub fn to_csi(&self) -> VolumeContentSource {
        let r#type = match self {
            Self::Snapshot(id) => SourceType::Snapshot(SnapshotSource {
                snapshot_id: id.clone(),
            }),
            Self::Volume(id) => SourceType::Volume(VolumeSource {
                volume_id: id.clone(),
            }),
        };
        VolumeContentSource {
            r#type: Some(r#type),
        }
    }
}

/// How a volume's data is laid out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Layout {
    /// A directory under the node's local root.
    Directory,
    /// A sparse file holding an ext4 filesystem.
    Image,
    /// A sparse file used as a raw block device.
    Block,
    /// A directory in its own XFS project, whose hard limit is the capacity.
    Quota {
        /// Its XFS project id.
        project: u32,
    },
    /// A subdirectory of an NFS share.
    Nfs {
        /// The volume's directory below the share, as path components.
        sub_dir: Vec<String>,
        /// What DeleteVolume does with the directory (the class's; a mutable
        /// `onDelete` overrides it).
        on_delete: OnDelete,
        /// The class's mountOptions, for the node plugin.
        mount_options: String,
    },
}

impl Layout {
    /// The layout's name, as volume contexts and messages show it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Directory => "directory",
            Self::Image => "image",
            Self::Block => "block",
            Self::Quota { .. } => "quota",
            Self::Nfs { .. } => "nfs",
        }
    }

    /// Data kept as a directory tree (copied file by file for snapshots and clones).
    pub fn is_tree(&self) -> bool {
        matches!(self, Self::Directory | Self::Quota { .. })
    }
}

/// A committed volume. Its presence is what makes a volume exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRecord {
    /// The CO's name for the volume (CreateVolume's name).
    pub name: String,
    /// The volume ID handed to the CO.
    pub volume_id: String,
    /// Size in bytes.
    pub capacity_bytes: i64,
    /// The class parameters it was made with, canonical (no CO-added keys).
    pub parameters: BTreeMap<String, String>,
    /// Mount or block.
    pub access_type: AccessType,
    /// How its data is laid out.
    pub layout: Layout,
    /// What it was filled from, if anything.
    pub content_source: Option<ContentSource>,
    /// What the node plugin needs to find and mount it.
    pub volume_context: BTreeMap<String, String>,
    /// Where it can be used (a local volume: its node).
    pub accessible_topology: Vec<BTreeMap<String, String>>,
    /// When it was made, in seconds since the epoch.
    pub created_unix_secs: u64,
    /// What ControllerModifyVolume (or CreateVolume's mutable_parameters) set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mutable_parameters: BTreeMap<String, String>,
}

impl VolumeRecord {
    /// As CSI's Volume message.
    pub fn to_csi(&self) -> Volume {
        self.clone().into_csi()
    }
}

impl VolumeRecord {
    /// As CSI's Volume message, moving the strings rather than copying them (a
    /// ListVolumes page makes hundreds).
    pub fn into_csi(self) -> Volume {
        Volume {
            capacity_bytes: self.capacity_bytes,
            content_source: self.content_source.as_ref().map(ContentSource::to_csi),
            volume_id: self.volume_id,
            volume_context: self.volume_context.into_iter().collect(),
            accessible_topology: self
                .accessible_topology
                .into_iter()
                .map(|segments| Topology {
                    segments: segments.into_iter().collect(),
                })
                .collect(),
        }
    }
}

/// A volume record read only as far as CSI's Volume message needs, its strings
/// borrowed from the record's JSON: a ListVolumes page reads hundreds and writes each
/// straight into the page's bytes ([`crate::listing`]), so a listed volume allocates
/// only its two small maps, and frees them before the next. The class parameters and
/// name are skipped unread.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedVolume<'a> {
    #[serde(borrow)]
    volume_id: Text<'a>,
    capacity_bytes: i64,
    content_source: Option<ContentSource>,
    #[serde(borrow)]
    volume_context: BTreeMap<Text<'a>, Text<'a>>,
    #[serde(borrow)]
    accessible_topology: Vec<BTreeMap<Text<'a>, Text<'a>>>,
}

impl ListedVolume<'_> {
    /// The volume's ID.
    pub fn volume_id(&self) -> &str {
        &self.volume_id.0
    }

    /// Writes CSI's Volume message for it (its fields, in csi.proto's order).
    pub fn encode_csi(&self, out: &mut Vec<u8>) {
        use crate::listing::field;
        if self.capacity_bytes != 0 {
            field::put_int64(1, self.capacity_bytes, out);
        }
        if !self.volume_id().is_empty() {
            field::put_str(2, self.volume_id(), out);
        }
        field::put_map(3, Text::pairs(&self.volume_context), out);
        if let Some(source) = &self.content_source {
            prost::encoding::message::encode(4, &source.to_csi(), out);
        }
        for segments in &self.accessible_topology {
            field::put_len(5, field::map_len(1, Text::pairs(segments)), out);
            field::put_map(1, Text::pairs(segments), out);
        }
    }
}

/// A string of a record, borrowed from its JSON unless it holds escapes.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Text<'a>(Cow<'a, str>);

impl Text<'_> {
    /// A map of them as string pairs.
    fn pairs<'m>(
        map: &'m BTreeMap<Text<'_>, Text<'_>>,
    ) -> impl Iterator<Item = (&'m str, &'m str)> {
        map.iter().map(|(key, value)| (&*key.0, &*value.0))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        struct Borrowing;
        impl<'de> serde::de::Visitor<'de> for Borrowing {
            type Value = Cow<'de, str>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, s: &'de str) -> std::result::Result<Self::Value, E> {
                Ok(Cow::Borrowed(s))
            }

            fn visit_str<E>(self, s: &str) -> std::result::Result<Self::Value, E> {
                Ok(Cow::Owned(s.to_owned()))
            }

            fn visit_string<E>(self, s: String) -> std::result::Result<Self::Value, E> {
                Ok(Cow::Owned(s))
            }
        }
        deserializer.deserialize_str(Borrowing).map(Text)
    }
}

/// A committed snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRecord {
    /// The CO's name for the snapshot.
    pub name: String,
    /// The snapshot ID handed to the CO.
    pub snapshot_id: String,
    /// The volume it copies.
    pub source_volume_id: String,
    /// The source volume's size when taken.
    pub size_bytes: i64,
    /// The source volume's layout (how the copy is laid out).
    pub layout: Layout,
    /// When it was taken, in seconds since the epoch.
    pub created_unix_secs: u64,
    /// The nanoseconds of its creation time.
    pub created_nanos: u32,
    /// The group snapshot this snapshot was taken in, if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group_snapshot_id: String,
}

impl SnapshotRecord {
    /// As CSI's Snapshot message (always ready: snapshots are whole copies).
    pub fn to_csi(&self) -> csi_proto::v1::Snapshot {
        csi_proto::v1::Snapshot {
            size_bytes: self.size_bytes,
            snapshot_id: self.snapshot_id.clone(),
            source_volume_id: self.source_volume_id.clone(),
            creation_time: Some(prost_types::Timestamp {
                seconds: i64::try_from(self.created_unix_secs).unwrap_or(i64::MAX),
                nanos: i32::try_from(self.created_nanos).unwrap_or(0),
            }),
            ready_to_use: true,
            group_snapshot_id: self.group_snapshot_id.clone(),
        }
    }
}

/// Seconds and nanoseconds since the epoch.
pub fn now() -> (u64, u32) {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (since.as_secs(), since.subsec_nanos())
}

/// A record as the JSON kept on disk or on a share.
pub fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(record).map_err(|e| Error::CorruptMetadata {
        path: "(encoding)".into(),
        reason: e.to_string(),
    })
}

/// A record from its JSON; CorruptMetadata naming `path` when it does not decode.
pub fn decode<'de, T: Deserialize<'de>>(path: &str, bytes: &'de [u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::CorruptMetadata {
        path: path.into(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn record(
        layout: Layout,
        content_source: Option<ContentSource>,
        context: &[(&str, &str)],
        topology: &[&[(&str, &str)]],
    ) -> VolumeRecord {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        VolumeRecord {
            name: "pvc-1".into(),
            volume_id: "local:0123456789abcdef0123456789abcdef:n1".into(),
            capacity_bytes: 5 << 30,
            parameters: map(&[("capacityEnforcement", "image"), ("x", "y")]),
            access_type: AccessType::Mount,
            layout,
            content_source,
            volume_context: map(context),
            accessible_topology: topology.iter().map(|segments| map(segments)).collect(),
            created_unix_secs: 7,
            mutable_parameters: map(&[("onDelete", "retain")]),
        }
    }

    #[test]
    fn a_listed_volume_is_the_message_of_its_whole_record() {
        let context = [("type", "local"), ("node", "n1"), ("layout", "directory")];
        let rows: Vec<(&str, VolumeRecord)> = vec![
            (
                "local, one topology segment",
                record(Layout::Directory, None, &context, &[&[("node", "n1")]]),
            ),
            (
                "restored from a snapshot, no context, two topologies",
                record(
                    Layout::Quota { project: 9 },
                    Some(ContentSource::Snapshot("local-snap:s:n1".into())),
                    &[],
                    &[&[("node", "n1"), ("zone", "z")], &[("node", "n2")]],
                ),
            ),
            (
                "strings with escapes, an empty value, no capacity",
                VolumeRecord {
                    capacity_bytes: 0,
                    ..record(
                        Layout::Directory,
                        None,
                        &[("path", "/a \"b\"\\c\n\u{1}é"), ("empty", "")],
                        &[&[("zone\t", "\"z\"")]],
                    )
                },
            ),
            (
                "an NFS clone, no topology",
                record(
                    Layout::Nfs {
                        sub_dir: vec!["a".into(), "b".into()],
                        on_delete: OnDelete::Delete,
                        mount_options: "nfsvers=4.2".into(),
                    },
                    Some(ContentSource::Volume("nfs:v:h/s".into())),
                    &[("type", "nfs"), ("server", "h")],
                    &[],
                ),
            ),
        ];
        for (name, record) in rows {
            for json in [
                serde_json::to_vec(&record).expect("encode"),
                encode(&record).expect("encode pretty"),
            ] {
                let listed: ListedVolume = serde_json::from_slice(&json).expect(name);
                assert_eq!(listed.volume_id(), record.volume_id, "{name}");
                let mut wire = Vec::new();
                listed.encode_csi(&mut wire);
                let decoded = Volume::decode(wire.as_slice()).expect(name);
                assert_eq!(decoded, record.to_csi(), "{name}");
            }
        }
    }
}
