//! ListVolumesResponse, written by hand rather than generated (build.rs maps the
//! message here): a server may hand it entries already in wire form, so that a page of
//! hundreds of volumes is one buffer, not hundreds of messages each made of a dozen
//! small allocations. On the wire it is the message csi.proto declares; a client
//! decodes every entry into `entries`.

use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};

/// The entries field's tag in csi.proto.
pub const ENTRIES_TAG: u32 = 1;
const NEXT_TOKEN_TAG: u32 = 2;

/// csi.v1.ListVolumesResponse.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct ListVolumesResponse {
    /// Entries as messages, sent first.
    pub entries: Vec<list_volumes_response::Entry>,
    /// Further entries in wire form, sent after `entries`: each is field
    /// [`ENTRIES_TAG`] with its length and an encoded Entry. Always empty when decoded.
    pub encoded_entries: Vec<u8>,
    /// Where the next page starts; empty on the last page.
    pub next_token: String,
}

/// The nested messages of ListVolumesResponse, as csi.proto declares them.
pub mod list_volumes_response {
    use crate::v1::{Volume, VolumeCondition};

    /// csi.v1.ListVolumesResponse.VolumeStatus.
    #[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
    pub struct VolumeStatus {
        /// The nodes the volume is published to.
        #[prost(string, repeated, tag = "1")]
        pub published_node_ids: Vec<String>,
        /// The volume's health, when the plugin reports it.
        #[prost(message, optional, tag = "2")]
        pub volume_condition: Option<VolumeCondition>,
    }

    /// csi.v1.ListVolumesResponse.Entry.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Entry {
        /// The volume.
        #[prost(message, optional, tag = "1")]
        pub volume: Option<Volume>,
        /// Where it is published.
        #[prost(message, optional, tag = "2")]
        pub status: Option<VolumeStatus>,
    }
}

impl prost::Message for ListVolumesResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        encoding::message::encode_repeated(ENTRIES_TAG, &self.entries, buf);
        buf.put_slice(&self.encoded_entries);
        if !self.next_token.is_empty() {
            encoding::string::encode(NEXT_TOKEN_TAG, &self.next_token, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        match tag {
            ENTRIES_TAG => {
                encoding::message::merge_repeated(wire_type, &mut self.entries, buf, ctx)
            }
            NEXT_TOKEN_TAG => encoding::string::merge(wire_type, &mut self.next_token, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let token = if self.next_token.is_empty() {
            0
        } else {
            encoding::string::encoded_len(NEXT_TOKEN_TAG, &self.next_token)
        };
        encoding::message::encoded_len_repeated(ENTRIES_TAG, &self.entries)
            + self.encoded_entries.len()
            + token
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.encoded_entries.clear();
        self.next_token.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::list_volumes_response::{Entry, VolumeStatus};
    use super::*;
    use crate::v1::Volume;
    use prost::Message;

    fn entry(id: &str, nodes: &[&str]) -> Entry {
        Entry {
            volume: Some(Volume {
                capacity_bytes: 1 << 20,
                volume_id: id.into(),
                volume_context: [("node".to_string(), "n1".to_string())].into(),
                ..Volume::default()
            }),
            status: Some(VolumeStatus {
                published_node_ids: nodes.iter().map(|n| n.to_string()).collect(),
                volume_condition: None,
            }),
        }
    }

    #[test]
    fn entries_in_wire_form_decode_after_the_messages() {
        let mut encoded_entries = Vec::new();
        for e in [entry("b", &[]), entry("c", &["n1", "n2"])] {
            encoding::message::encode(ENTRIES_TAG, &e, &mut encoded_entries);
        }
        let sent = ListVolumesResponse {
            entries: vec![entry("a", &["n1"])],
            encoded_entries,
            next_token: "after:c".into(),
        };
        let bytes = sent.encode_to_vec();
        assert_eq!(bytes.len(), sent.encoded_len());
        let got = ListVolumesResponse::decode(bytes.as_slice()).expect("decode");
        assert_eq!(
            got,
            ListVolumesResponse {
                entries: vec![
                    entry("a", &["n1"]),
                    entry("b", &[]),
                    entry("c", &["n1", "n2"])
                ],
                encoded_entries: Vec::new(),
                next_token: "after:c".into(),
            }
        );
    }

    #[test]
    fn an_empty_last_page_is_empty_on_the_wire() {
        assert!(ListVolumesResponse::default().encode_to_vec().is_empty());
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let mut bytes = Vec::new();
        encoding::string::encode(9, &"later".to_string(), &mut bytes);
        encoding::string::encode(NEXT_TOKEN_TAG, &"t".to_string(), &mut bytes);
        let got = ListVolumesResponse::decode(bytes.as_slice()).expect("decode");
        assert_eq!(got.next_token, "t");
    }
}
