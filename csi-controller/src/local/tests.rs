use std::collections::BTreeMap;

use super::*;
use driver_contract::request::AccessType;

fn record(key: &Key, layout: Layout) -> VolumeRecord {
    VolumeRecord {
        name: format!("pvc-{key}"),
        volume_id: format!("local:{key}:n1"),
        capacity_bytes: 1 << 20,
        parameters: BTreeMap::new(),
        access_type: AccessType::Mount,
        layout,
        content_source: None,
        volume_context: BTreeMap::new(),
        accessible_topology: Vec::new(),
        created_unix_secs: 1,
        mutable_parameters: BTreeMap::new(),
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names = list_names(dir).expect("list");
    names.sort();
    names
}

#[test]
fn creating_and_deleting_an_empty_volume_cost_one_fsync_each() {
    let root = tempfile::tempdir().expect("tempdir");
    let local = LocalBackend::open(root.path(), "n1").expect("open");
    let key = Key::for_volume("a");
    local
        .create(&key, &record(&key, Layout::Directory), &Fill::Empty)
        .expect("create");
    assert_eq!(local.store().syncs(), 1, "create");
    local.delete(&key).expect("delete");
    assert_eq!(local.store().syncs(), 2, "delete");
    assert!(names(&root.path().join(VOLUMES)).is_empty());
}

/// What open finds after a crash at each point of a create or delete, and what it
/// makes of it: a volume is whole (record and data) or absent.
#[test]
fn open_makes_every_crash_point_whole_or_absent() {
    let key = Key::for_volume("v");
    let k = key.to_string();
    type Row = (&'static str, bool, Vec<String>, Vec<String>);
    let rows: Vec<Row> = vec![
        (
            "data built, no record",
            false,
            vec![format!(".{k}.tmp")],
            vec![],
        ),
        ("data renamed, no record", false, vec![k.clone()], vec![]),
        (
            "record, data lost with a power cut",
            true,
            vec![],
            vec![k.clone()],
        ),
        (
            "record, data set aside for deletion",
            true,
            vec![format!(".{k}.deleting")],
            vec![k.clone()],
        ),
        (
            "record gone, data set aside",
            false,
            vec![format!(".{k}.deleting")],
            vec![],
        ),
        ("record and data", true, vec![k.clone()], vec![k.clone()]),
    ];
    for (name, recorded, present, want) in rows {
        let root = tempfile::tempdir().expect("tempdir");
        let volumes = root.path().join(VOLUMES);
        fs::create_dir_all(&volumes).expect("mkdir");
        for n in &present {
            fs::create_dir(volumes.join(n)).expect("mkdir data");
            fs::write(volumes.join(n).join("file"), b"x").expect("write");
        }
        if recorded {
            Store::open(&root.path().join(LOG))
                .expect("store")
                .commit(vec![Change::PutVolume {
                    key: k.clone(),
                    record: record(&key, Layout::Directory),
                }])
                .expect("commit");
        }
        let local = LocalBackend::open(root.path(), "n1").expect("open");
        assert_eq!(names(&volumes), want, "{name}");
        assert_eq!(local.get(&key).expect("get").is_some(), recorded, "{name}");
        let kept_file = volumes.join(&k).join("file").exists();
        assert_eq!(
            kept_file,
            recorded && !present.is_empty(),
            "{name}: data kept"
        );
    }
}

#[test]
fn record_files_of_earlier_versions_move_into_the_log() {
    let root = tempfile::tempdir().expect("tempdir");
    let volumes = root.path().join(VOLUMES);
    fs::create_dir_all(&volumes).expect("mkdir");
    let key = Key::for_volume("old");
    let old = record(&key, Layout::Directory);
    fs::create_dir(volumes.join(key.as_str())).expect("data");
    fs::write(
        volumes.join(format!("{key}.json")),
        record::encode(&old).expect("encode"),
    )
    .expect("write");
    let local = LocalBackend::open(root.path(), "n1").expect("open");
    assert_eq!(local.get(&key).expect("get"), Some(old.clone()));
    assert_eq!(names(&volumes), vec![key.to_string()]);
    drop(local);
    let again = LocalBackend::open(root.path(), "n1").expect("reopen");
    assert_eq!(again.list().expect("list"), vec![old]);
}

#[test]
fn pages_start_after_the_token() {
    let root = tempfile::tempdir().expect("tempdir");
    let local = LocalBackend::open(root.path(), "n1").expect("open");
    let mut ids: Vec<String> = (0..600)
        .map(|i| {
            let key = Key::for_volume(&format!("p{i}"));
            local
                .create(&key, &record(&key, Layout::Directory), &Fill::Empty)
                .expect("create");
            format!("local:{key}:n1")
        })
        .collect();
    ids.sort();
    let page = |after: &str, limit| -> Vec<String> {
        local
            .list_after(after, limit)
            .expect("page")
            .into_iter()
            .map(|r| r.volume_id)
            .collect()
    };
    let rows: Vec<(&str, &str, usize, Vec<String>)> = vec![
        ("first page", "", 3, ids[..3].to_vec()),
        ("after an ID", &ids[299], 301, ids[300..].to_vec()),
        ("after the last", &ids[599], 5, vec![]),
        ("after every local ID", "nfs:x", 5, vec![]),
        ("before every local ID", "a", 2, ids[..2].to_vec()),
        ("all", "", usize::MAX, ids.clone()),
    ];
    for (name, after, limit, want) in rows {
        assert_eq!(page(after, limit), want, "{name}");
    }
}

#[test]
fn reserved_bytes_follow_create_expand_delete_and_reopen() {
    let root = tempfile::tempdir().expect("tempdir");
    let (a, b) = (Key::for_volume("a"), Key::for_volume("b"));
    let local = LocalBackend::open(root.path(), "n1").expect("open");
    // A fresh block volume is a sparse file: its whole capacity is still promised.
    local
        .create(&a, &record(&a, Layout::Block), &Fill::Empty)
        .expect("create a");
    local
        .create(&b, &record(&b, Layout::Directory), &Fill::Empty)
        .expect("create b");
    assert_eq!(
        local.reserved_bytes().expect("reserved"),
        1 << 20,
        "created"
    );
    let a_record = local.get(&a).expect("get").expect("a exists");
    local.expand(&a, &a_record, 3 << 20).expect("expand");
    assert_eq!(local.reserved_bytes().expect("reserved"), 3 << 20, "grown");
    drop(local);
    let local = LocalBackend::open(root.path(), "n1").expect("reopen");
    assert_eq!(
        local.reserved_bytes().expect("reserved"),
        3 << 20,
        "reopened"
    );
    local.delete(&a).expect("delete");
    assert_eq!(local.reserved_bytes().expect("reserved"), 0, "deleted");
}

#[test]
fn a_project_lease_skips_the_ids_records_and_other_leases_hold() {
    let root = tempfile::tempdir().expect("tempdir");
    let local = LocalBackend::open(root.path(), "n1").expect("open");
    let (key, holder) = (Key::for_volume("q"), Key::for_volume("holder"));
    let first = quota::first_candidate(key.as_str());
    let held = |project| Change::PutVolume {
        key: holder.to_string(),
        record: record(&holder, Layout::Quota { project }),
    };
    local.store().commit(vec![held(first)]).expect("commit");
    let lease = local.lease_project(&key).expect("lease");
    assert_ne!(lease.id, first, "held by a record");
    let second = local.lease_project(&key).expect("second lease");
    assert!(
        second.id != first && second.id != lease.id,
        "held by a lease"
    );
    drop((lease, second));
    local
        .store()
        .commit(vec![Change::DeleteVolume {
            key: holder.to_string(),
        }])
        .expect("commit");
    assert_eq!(local.lease_project(&key).expect("lease").id, first, "freed");
}
