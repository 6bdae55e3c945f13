//! Volume and snapshot IDs (`driver_contract::ids`) and the NFS export inside them.
//!
//! The whole input is tried as a volume ID, a snapshot ID and a CO name; split at its
//! first newline it is a `server` and `share` pair. Checks: no panic; an ID that parses
//! formats back to the same string, at most 128 bytes; every path component derived from
//! an ID or a name (key, node, share, the ephemeral directory) is one plain component; an
//! ID the driver builds parses back to itself; memory proportional to the input.
#![no_main]

use std::path::{Component, Path};

use driver_contract::export::Export;
use driver_contract::ids::{
    Key, Location, MAX_ID_LEN, SnapshotId, VolumeId, key_of, valid_node_id, validate_name,
};
use libfuzzer_sys::fuzz_target;
use stowage_fuzz::{assert_bounded, header, peak_allocation};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ((volume, snapshot), peak) =
        peak_allocation(|| (VolumeId::parse(text), SnapshotId::parse(text)));
    assert_bounded(peak, text.len(), 4, 1024);
    if let Some(id) = volume {
        check_parsed(text, &id.to_string(), &id.key, &id.location);
        assert!(SnapshotId::parse(text).is_none(), "{text:?} is both kinds");
    }
    if let Some(id) = snapshot {
        check_parsed(text, &id.to_string(), &id.key, &id.location);
    }
    if validate_name("name", text).is_ok() {
        // The node plugin keeps an ephemeral volume's data at `<state>/ephemeral/<id>`.
        assert_one_component(text);
        check_built(Key::for_volume(text), Key::for_snapshot(text), None);
    }
    if valid_node_id(text) {
        assert_one_component(text);
        let location = Location::Local {
            node: text.to_string(),
        };
        check_built(
            Key::for_volume(text),
            Key::for_snapshot(text),
            Some(location),
        );
    }
    let (server, share) = header(data);
    let (Ok(server), Ok(share)) = (std::str::from_utf8(server), std::str::from_utf8(share)) else {
        return;
    };
    if let Ok(export) = Export::parse(server, share) {
        check_export(&export);
        assert_eq!(
            Export::parse(&export.server(), &export.share),
            Ok(export.clone())
        );
        check_built(
            Key::for_volume(server),
            Key::for_snapshot(share),
            Some(Location::Nfs(export)),
        );
    }
});

fn check_parsed(text: &str, formatted: &str, key: &Key, location: &Location) {
    assert_eq!(formatted, text, "a parsed ID formats back as it was");
    assert!(text.len() <= MAX_ID_LEN);
    assert_eq!(key_of(text), key.as_str());
    assert_one_component(key.as_str());
    match location {
        Location::Local { node } => {
            assert!(valid_node_id(node));
            assert_one_component(node);
        }
        Location::Nfs(export) => check_export(export),
    }
}

/// IDs the driver builds for a location parse back to themselves.
fn check_built(volume_key: Key, snapshot_key: Key, location: Option<Location>) {
    let Some(location) = location else {
        return;
    };
    if let Ok(id) = VolumeId::new(volume_key, location.clone()) {
        let text = id.to_string();
        assert!(text.len() <= MAX_ID_LEN);
        assert_eq!(VolumeId::parse(&text), Some(id), "{text:?}");
        // A volume the driver creates can be snapshotted: its snapshot ID fits too.
        let snapshot = SnapshotId::new(snapshot_key, location)
            .unwrap_or_else(|e| panic!("volume {text:?} cannot be snapshotted: {e}"));
        let text = snapshot.to_string();
        assert!(text.len() <= MAX_ID_LEN, "{text:?} is too long");
        assert_eq!(SnapshotId::parse(&text), Some(snapshot), "{text:?}");
    }
}

fn check_export(export: &Export) {
    assert!(export.share.starts_with('/'));
    assert!(
        Path::new(&export.share).components().all(|c| matches!(
            c,
            Component::RootDir | Component::Normal(_) | Component::CurDir
        )),
        "share {:?} leaves its root",
        export.share
    );
    assert_eq!(
        Export::parse_compact(&export.to_string()),
        Ok(export.clone())
    );
}

fn assert_one_component(name: &str) {
    let components: Vec<Component> = Path::new(name).components().collect();
    assert!(
        matches!(components.as_slice(), [Component::Normal(c)] if *c == name),
        "{name:?} is not one plain path component"
    );
}
