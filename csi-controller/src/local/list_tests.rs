//! ListVolumes pages of the local backend: whatever the token, a page is the volumes
//! whose IDs sort after it, in ID order.

use std::collections::BTreeMap;

use super::*;
use csi_proto::v1::Volume;
use driver_contract::request::AccessType;
use prost::Message;

fn record(key: &Key) -> VolumeRecord {
    VolumeRecord {
        name: format!("pvc-{key}"),
        volume_id: format!("local:{key}:n1"),
        capacity_bytes: 1 << 20,
        parameters: BTreeMap::from([("capacityEnforcement".into(), "none".into())]),
        access_type: AccessType::Mount,
        layout: Layout::Directory,
        content_source: None,
        volume_context: BTreeMap::from([("node".into(), "n1".into())]),
        accessible_topology: vec![BTreeMap::from([("node".into(), "n1".into())])],
        created_unix_secs: 1,
        mutable_parameters: BTreeMap::new(),
    }
}

#[test]
fn a_page_holds_the_volumes_after_any_token_in_id_order() {
    let root = tempfile::tempdir().expect("tempdir");
    let local = LocalBackend::open(root.path(), "n1").expect("open");
    let mut ids: Vec<String> = (0..40)
        .map(|i| {
            let key = Key::for_volume(&format!("v{i}"));
            local
                .create(&key, &record(&key), &Fill::Empty)
                .expect("create");
            format!("local:{key}:n1")
        })
        .collect();
    ids.sort();
    let key = |i: usize| key_of(&ids[i]).to_string();
    let rows: Vec<(&str, String, usize)> = vec![
        ("from the start", String::new(), 5),
        ("after this node's ID", ids[7].clone(), 5),
        ("after the last", ids[39].clone(), 5),
        (
            "another node's ID sorting before ours",
            format!("local:{}:a", key(7)),
            5,
        ),
        (
            "another node's ID sorting after ours",
            format!("local:{}:z", key(7)),
            5,
        ),
        ("a key without a node", format!("local:{}", key(7)), 5),
        (
            "a key with a digit too many",
            format!("local:{}0:n1", key(7)),
            5,
        ),
        (
            "a key with a letter too many",
            format!("local:{}f:n1", key(7)),
            5,
        ),
        ("one hex digit", format!("local:{}", &key(20)[..1]), 50),
        ("before every local ID", "a".into(), 3),
        ("the bare prefix", "local:".into(), 3),
        ("after every local ID", "local;".into(), 3),
        ("an NFS ID", "nfs:x".into(), 3),
        ("not ASCII", "local:é".into(), 3),
        ("all", String::new(), usize::MAX),
    ];
    for (name, after, limit) in rows {
        let want: Vec<&String> = ids
            .iter()
            .filter(|id| id.as_str() > after.as_str())
            .take(limit)
            .collect();
        let mut page = WireVolumes::default();
        local.list_after(&after, limit, &mut page).expect("page");
        let got: Vec<String> = page.sorted().iter().map(|v| v.id.to_string()).collect();
        assert_eq!(got.iter().collect::<Vec<_>>(), want, "{name}");
    }
}

#[test]
fn a_page_is_the_volumes_csi_messages_in_wire_form() {
    let root = tempfile::tempdir().expect("tempdir");
    let local = LocalBackend::open(root.path(), "n1").expect("open");
    let key = Key::for_volume("v");
    let made = record(&key);
    local.create(&key, &made, &Fill::Empty).expect("create");
    let mut page = WireVolumes::default();
    local.list_after("", 10, &mut page).expect("page");
    let volumes: Vec<Volume> = page
        .sorted()
        .iter()
        .map(|v| Volume::decode(v.volume).expect("a Volume message"))
        .collect();
    assert_eq!(volumes, vec![made.to_csi()]);
}
