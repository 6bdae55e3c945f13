//! Whether a node has room for a claim, read from the published CSIStorageCapacity
//! objects as kube-scheduler's volume binding reads them: the object of the claim's
//! class whose topology selects the node, its maximumVolumeSize when set, else its
//! capacity.

use k8s_openapi::api::storage::v1::CSIStorageCapacity;
use stowage_common::quantity::parse_bytes;

use driver_contract::TOPOLOGY_NODE_KEY;

/// What the published objects say about `class` on `node`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// Nothing published for this class and node: placement goes ahead as without tracking.
    Unknown,
    /// The largest volume the node can take now, in bytes.
    Bytes(u128),
}

impl Room {
    /// Whether a claim of `request` bytes fits.
    pub fn fits(self, request: u128) -> bool {
        match self {
            Self::Unknown => true,
            Self::Bytes(room) => request <= room,
        }
    }
}

/// The reason of the Warning event a refused placement records.
pub const NOT_ENOUGH_CAPACITY: &str = "NotEnoughCapacity";

/// A node's published capacity for a class is smaller than a claim: said in the
/// claim's Warning event and in the refusal of whoever placed it there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "node {node} has room for {room} bytes of class {class} (its CSIStorageCapacity), \
     the claim asks for {request}: free space there or use another node"
)]
pub struct NoRoom {
    /// The class of the claim.
    pub class: String,
    /// The node that has no room.
    pub node: String,
    /// The bytes the node's capacity object gives the class.
    pub room: u128,
    /// The bytes the claim asks for.
    pub request: u128,
}

/// Why a claim of `request` bytes does not go on `node`, or `None` when it fits.
pub fn refusal(class: &str, node: &str, room: Room, request: u128) -> Option<NoRoom> {
    match room {
        Room::Bytes(bytes) if request > bytes => Some(NoRoom {
            class: class.to_string(),
            node: node.to_string(),
            room: bytes,
            request,
        }),
        _ => None,
    }
}

/// The room the published `capacities` give `class` on `node`.
pub fn room(capacities: &[CSIStorageCapacity], class: &str, node: &str) -> Room {
    capacities
        .iter()
        .filter(|c| c.storage_class_name == class && selects(c, node))
        .find_map(|c| {
            let figure = c.maximum_volume_size.as_ref().or(c.capacity.as_ref())?;
            parse_bytes(&figure.0).map(Room::Bytes)
        })
        .unwrap_or(Room::Unknown)
}

/// The node of a capacity's topology, when it selects exactly one by our key.
pub fn node_of(capacity: &CSIStorageCapacity) -> Option<&str> {
    capacity
        .node_topology
        .as_ref()?
        .match_labels
        .as_ref()?
        .get(TOPOLOGY_NODE_KEY)
        .map(String::as_str)
}

fn selects(capacity: &CSIStorageCapacity, node: &str) -> bool {
    node_of(capacity) == Some(node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn capacity(
        class: &str,
        node: &str,
        bytes: Option<&str>,
        max: Option<&str>,
    ) -> CSIStorageCapacity {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{class}-{node}")},
            "storageClassName": class,
            "nodeTopology": {"matchLabels": {TOPOLOGY_NODE_KEY: node}},
            "capacity": bytes,
            "maximumVolumeSize": max,
        }))
        .expect("capacity")
    }

    #[test]
    fn room_is_read_as_the_scheduler_reads_it() {
        let published = [
            capacity("fast", "n1", Some("10Gi"), Some("4Gi")),
            capacity("fast", "n2", Some("1Gi"), None),
            capacity("slow", "n1", None, None),
        ];
        let gi = 1u128 << 30;
        let cases = [
            (
                "maximumVolumeSize before capacity",
                "fast",
                "n1",
                Room::Bytes(4 * gi),
            ),
            ("capacity without a maximum", "fast", "n2", Room::Bytes(gi)),
            ("no figures: unknown", "slow", "n1", Room::Unknown),
            ("another node: unknown", "fast", "n3", Room::Unknown),
            ("another class: unknown", "other", "n1", Room::Unknown),
        ];
        for (what, class, node, expected) in cases {
            assert_eq!(room(&published, class, node), expected, "{what}");
        }
        assert!(Room::Bytes(gi).fits(gi));
        assert!(!Room::Bytes(gi).fits(gi + 1));
        assert!(Room::Unknown.fits(u128::MAX));
    }

    #[test]
    fn a_refusal_names_the_node_the_room_and_the_request() {
        let cases = [
            ("fits exactly", Room::Bytes(10), 10, None),
            ("unknown room never refuses", Room::Unknown, u128::MAX, None),
            (
                "too big",
                Room::Bytes(10),
                11,
                Some(
                    "node n1 has room for 10 bytes of class fast (its CSIStorageCapacity), \
                     the claim asks for 11: free space there or use another node",
                ),
            ),
        ];
        for (what, room, request, expected) in cases {
            assert_eq!(
                refusal("fast", "n1", room, request)
                    .map(|why| why.to_string())
                    .as_deref(),
                expected,
                "{what}"
            );
        }
    }
}
