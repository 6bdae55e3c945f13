//! ListVolumes pages in wire form. The backends write each volume they find once, as
//! CSI's Volume message, into one buffer; the page sorts them by ID there and copies
//! its entries into the response's bytes. No message is made per volume: a page of
//! hundreds used to hold a dozen small allocations per volume until it was sent, and
//! with glibc's malloc in a heap a large fill left full of holes those were most of a
//! page's cost at 100,000 volumes (BENCHMARKS.md, ListVolumes pages).

use std::ops::Range;

use csi_proto::list_volumes::ENTRIES_TAG;
use csi_proto::v1::Volume;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

/// The volumes found for a page, each in wire form.
#[derive(Debug, Default)]
pub struct WireVolumes {
    ids: String,
    bytes: Vec<u8>,
    spans: Vec<Span>,
}

#[derive(Debug)]
struct Span {
    id: Range<usize>,
    volume: Range<usize>,
}

/// One volume of a page: its ID and its encoded Volume message.
#[derive(Debug, Clone, Copy)]
pub struct WireVolume<'a> {
    /// The volume's ID.
    pub id: &'a str,
    /// Its Volume message, encoded.
    pub volume: &'a [u8],
}

impl WireVolumes {
    /// Adds a volume made as a message.
    pub fn push_message(&mut self, volume: &Volume) {
        self.push_with(&volume.volume_id, |out| volume.encode_raw(out));
    }

    /// Adds the volume with ID `id` whose Volume message's fields `encode` writes.
    pub fn push_with(&mut self, id: &str, encode: impl FnOnce(&mut Vec<u8>)) {
        let volume_start = self.bytes.len();
        encode(&mut self.bytes);
        let id_start = self.ids.len();
        self.ids.push_str(id);
        self.spans.push(Span {
            id: id_start..self.ids.len(),
            volume: volume_start..self.bytes.len(),
        });
    }

    /// The volumes in ID order.
    pub fn sorted(&self) -> Vec<WireVolume<'_>> {
        let mut volumes: Vec<WireVolume<'_>> = self
            .spans
            .iter()
            .map(|span| WireVolume {
                id: &self.ids[span.id.clone()],
                volume: &self.bytes[span.volume.clone()],
            })
            .collect();
        volumes.sort_unstable_by(|a, b| a.id.cmp(b.id));
        volumes
    }
}

impl WireVolume<'_> {
    /// Appends its ListVolumesResponse entry (the entries field with the volume and
    /// its status: the nodes it is published to) to `out`.
    pub fn encode_entry(&self, published_node_ids: &[String], out: &mut Vec<u8>) {
        const VOLUME: u32 = 1;
        const STATUS: u32 = 2;
        const PUBLISHED_NODE_IDS: u32 = 1;
        let status_len: usize = published_node_ids
            .iter()
            .map(|node| field::str_len(PUBLISHED_NODE_IDS, node))
            .sum();
        let entry_len =
            field::nested_len(VOLUME, self.volume.len()) + field::nested_len(STATUS, status_len);
        field::put_len(ENTRIES_TAG, entry_len, out);
        field::put_len(VOLUME, self.volume.len(), out);
        out.extend_from_slice(self.volume);
        field::put_len(STATUS, status_len, out);
        for node in published_node_ids {
            field::put_str(PUBLISHED_NODE_IDS, node, out);
        }
    }
}

/// Protobuf fields written from borrowed strings (prost's own writers take owned
/// ones). Each writes its field whatever it holds; proto3 leaves empty singular
/// fields out, which is the caller's choice.
pub mod field {
    use super::*;

    /// The bytes of a length-delimited field holding `len` bytes.
    pub fn nested_len(tag: u32, len: usize) -> usize {
        key_len(tag) + encoded_len_varint(len as u64) + len
    }

    /// Writes a length-delimited field's key and length; its `len` bytes follow.
    pub fn put_len(tag: u32, len: usize, out: &mut Vec<u8>) {
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(len as u64, out);
    }

    /// The bytes of a string field.
    pub fn str_len(tag: u32, value: &str) -> usize {
        nested_len(tag, value.len())
    }

    /// Writes a string field.
    pub fn put_str(tag: u32, value: &str, out: &mut Vec<u8>) {
        put_len(tag, value.len(), out);
        out.extend_from_slice(value.as_bytes());
    }

    /// Writes an int64 field.
    pub fn put_int64(tag: u32, value: i64, out: &mut Vec<u8>) {
        encode_key(tag, WireType::Varint, out);
        // int64 is the two's complement as a varint.
        encode_varint(value as u64, out);
    }

    /// The bytes of one entry of a map<string, string> field.
    pub fn pair_len(tag: u32, key: &str, value: &str) -> usize {
        nested_len(tag, pair_body_len(key, value))
    }

    /// Writes one entry of a map<string, string> field (empty keys and values left
    /// out, as proto3 leaves out defaults).
    pub fn put_pair(tag: u32, key: &str, value: &str, out: &mut Vec<u8>) {
        put_len(tag, pair_body_len(key, value), out);
        if !key.is_empty() {
            put_str(1, key, out);
        }
        if !value.is_empty() {
            put_str(2, value, out);
        }
    }

    /// The bytes of a map<string, string> field holding `pairs`.
    pub fn map_len<'a>(tag: u32, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> usize {
        pairs.into_iter().map(|(k, v)| pair_len(tag, k, v)).sum()
    }

    /// Writes a map<string, string> field holding `pairs`.
    pub fn put_map<'a>(
        tag: u32,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        out: &mut Vec<u8>,
    ) {
        for (key, value) in pairs {
            put_pair(tag, key, value, out);
        }
    }

    fn pair_body_len(key: &str, value: &str) -> usize {
        let part = |tag, s: &str| if s.is_empty() { 0 } else { str_len(tag, s) };
        part(1, key) + part(2, value)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use csi_proto::v1::{ListVolumesResponse, Topology, list_volumes_response};

    use super::*;

    fn volume(id: &str, capacity_bytes: i64) -> Volume {
        Volume {
            capacity_bytes,
            volume_id: id.into(),
            volume_context: HashMap::from([
                ("node".to_string(), "n1".to_string()),
                (String::new(), "empty key".to_string()),
                ("empty value".to_string(), String::new()),
            ]),
            content_source: None,
            accessible_topology: vec![Topology {
                segments: HashMap::from([("topology.stowage.io/node".into(), "n1".into())]),
            }],
        }
    }

    /// The fields a test writes by hand for `volume`, as a backend's record would.
    fn write_by_hand(v: &Volume, out: &mut Vec<u8>) {
        field::put_int64(1, v.capacity_bytes, out);
        field::put_str(2, &v.volume_id, out);
        fn pairs(map: &HashMap<String, String>) -> Vec<(&str, &str)> {
            map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
        }
        field::put_map(3, pairs(&v.volume_context), out);
        for topology in &v.accessible_topology {
            let segments = pairs(&topology.segments);
            field::put_len(5, field::map_len(1, segments.clone()), out);
            field::put_map(1, segments, out);
        }
    }

    #[test]
    fn a_page_of_wire_volumes_decodes_as_the_messages_in_id_order() {
        let volumes = [volume("c", 3), volume("a", -1), volume("b", i64::MAX)];
        let mut wire = WireVolumes::default();
        wire.push_message(&volumes[0]);
        wire.push_with(&volumes[1].volume_id, |out| write_by_hand(&volumes[1], out));
        wire.push_with(&volumes[2].volume_id, |out| write_by_hand(&volumes[2], out));
        let nodes = [vec![], vec!["n1".to_string(), "n2".to_string()], vec![]];
        let mut response = ListVolumesResponse::default();
        for (volume, nodes) in wire.sorted().iter().zip(&nodes) {
            volume.encode_entry(nodes, &mut response.encoded_entries);
        }
        let decoded =
            ListVolumesResponse::decode(response.encode_to_vec().as_slice()).expect("decode");
        let want: Vec<list_volumes_response::Entry> = [&volumes[1], &volumes[2], &volumes[0]]
            .into_iter()
            .zip(nodes)
            .map(|(v, published_node_ids)| list_volumes_response::Entry {
                volume: Some(v.clone()),
                status: Some(list_volumes_response::VolumeStatus {
                    published_node_ids,
                    volume_condition: None,
                }),
            })
            .collect();
        assert_eq!(decoded.entries, want);
    }

    #[test]
    fn an_empty_page_sorts_to_nothing() {
        assert!(WireVolumes::default().sorted().is_empty());
    }
}
