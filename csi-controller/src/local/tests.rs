use std::collections::BTreeMap;
use std::time::Duration;

use super::reaper::tests::{allocated_under, write_data};
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

/// An empty directory volume is made in place, not staged and renamed: what a failed
/// create left under its name (no record holds it) goes to the reaper first.
#[test]
fn an_empty_directory_is_made_in_place_after_what_a_failed_create_left() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().expect("tempdir");
    let local = LocalBackend::open(root.path(), "n1").expect("open");
    let key = Key::for_volume("left");
    let data = root.path().join(VOLUMES).join(key.as_str());
    fs::create_dir(&data).expect("mkdir");
    fs::write(data.join("half"), b"of a failed create").expect("write");
    local
        .create(&key, &record(&key, Layout::Directory), &Fill::Empty)
        .expect("create");
    assert_eq!(names(&root.path().join(VOLUMES)), vec![key.to_string()]);
    assert!(names(&data).is_empty(), "the volume starts empty");
    let mode = fs::metadata(&data).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o777, "pods of any uid write here");
    assert!(local.reaper().wait_idle(Duration::from_secs(30)), "freed");
    assert!(names(&root.path().join(REAPING)).is_empty());
}

/// What open finds after a crash at each point of a create or delete, and what it
/// makes of it: a volume is whole (record and data) or absent, and data no record
/// holds goes to the reaper, never back into a volume.
#[test]
fn open_makes_every_crash_point_whole_or_absent() {
    let key = Key::for_volume("v");
    let k = key.to_string();
    let deleting = format!(".{k}.deleting");
    // (crash point, record kept, entries in volumes/, entries in reaping/, what
    // volumes/ holds after open, whose data the volume has)
    type Row = (
        &'static str,
        bool,
        Vec<String>,
        Vec<&'static str>,
        Vec<String>,
        Option<String>,
    );
    let rows: Vec<Row> = vec![
        (
            "data built, no record",
            false,
            vec![format!(".{k}.tmp")],
            vec![],
            vec![],
            None,
        ),
        (
            "data renamed, no record",
            false,
            vec![k.clone()],
            vec![],
            vec![],
            None,
        ),
        (
            "record, data lost with a power cut",
            true,
            vec![],
            vec![],
            vec![k.clone()],
            None,
        ),
        (
            "record, data set aside for deletion",
            true,
            vec![deleting.clone()],
            vec![],
            vec![k.clone()],
            Some(deleting.clone()),
        ),
        (
            "record gone, data set aside",
            false,
            vec![deleting.clone()],
            vec![],
            vec![],
            None,
        ),
        (
            "record gone, data handed to the reaper",
            false,
            vec![],
            vec!["deleted"],
            vec![],
            None,
        ),
        (
            "made again, the deleted data still being freed",
            true,
            vec![k.clone()],
            vec!["deleted"],
            vec![k.clone()],
            Some(k.clone()),
        ),
        (
            "made again, the deleted data's last rename lost",
            true,
            vec![k.clone(), deleting.clone()],
            vec![],
            vec![k.clone()],
            Some(k.clone()),
        ),
        (
            "record and data",
            true,
            vec![k.clone()],
            vec![],
            vec![k.clone()],
            Some(k.clone()),
        ),
    ];
    for (name, recorded, present, reaping, want, kept) in rows {
        let root = tempfile::tempdir().expect("tempdir");
        let volumes = root.path().join(VOLUMES);
        let reaping_dir = root.path().join(REAPING);
        for (dir, entries) in [
            (&volumes, present.clone()),
            (
                &reaping_dir,
                reaping.iter().map(|n| n.to_string()).collect(),
            ),
        ] {
            fs::create_dir_all(dir).expect("mkdir");
            for n in entries {
                fs::create_dir(dir.join(&n)).expect("mkdir data");
                fs::write(dir.join(&n).join("file"), &n).expect("write");
            }
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
        let data = fs::read_to_string(volumes.join(&k).join("file")).ok();
        assert_eq!(data, kept, "{name}: whose data the volume holds");
        assert!(
            local.reaper().wait_idle(Duration::from_secs(30)),
            "{name}: leftovers freed"
        );
        assert!(names(&reaping_dir).is_empty(), "{name}: leftovers freed");
        assert_eq!(names(&volumes), want, "{name}: after the reaper");
    }
}

/// Slow enough that a test sees a 256 MiB volume's data before it is all freed.
const SLOW: Pacing = Pacing {
    slice: 32 << 20,
    pause: Duration::from_millis(500),
};

const MIB: u64 = 1 << 20;

/// A snapshot of `source` (a directory volume) taken as `key`.
fn snapshot_of(key: &Key, source: &VolumeRecord) -> SnapshotRecord {
    SnapshotRecord {
        name: format!("snap-{key}"),
        snapshot_id: format!("local:{key}:n1"),
        source_volume_id: source.volume_id.clone(),
        size_bytes: source.capacity_bytes,
        layout: Layout::Directory,
        created_unix_secs: 1,
        created_nanos: 0,
        group_snapshot_id: String::new(),
    }
}

/// DeleteVolume and DeleteSnapshot answer once the record is gone, with the data
/// still to free; the reaper frees it after.
#[test]
fn a_delete_answers_before_large_data_is_freed_and_the_reaper_frees_it_after() {
    type Delete = fn(&LocalBackend, &Key, &Key) -> (bool, PathBuf);
    let rows: &[(&str, Delete)] = &[
        ("volume", |local, volume, _| {
            local.delete(volume).expect("delete");
            let gone = local.get(volume).expect("get").is_none();
            (gone, local.root().join(VOLUMES).join(volume.as_str()))
        }),
        ("snapshot", |local, volume, snapshot| {
            let source = local.get(volume).expect("get").expect("the source");
            local
                .create_snapshot(snapshot, &source, &snapshot_of(snapshot, &source))
                .expect("snapshot");
            local.delete_snapshot(snapshot).expect("delete");
            let gone = local.get_snapshot(snapshot).expect("get").is_none();
            (gone, local.root().join(SNAPSHOTS).join(snapshot.as_str()))
        }),
    ];
    for (what, delete) in rows {
        let root = tempfile::tempdir().expect("tempdir");
        let local = LocalBackend::open_with(root.path(), "n1", SLOW).expect("open");
        let (volume, snapshot) = (Key::for_volume("large"), Key::for_snapshot("large"));
        local
            .create(&volume, &record(&volume, Layout::Directory), &Fill::Empty)
            .expect("create");
        let data = root.path().join(VOLUMES).join(volume.as_str());
        write_data(&data.join("fill"), 256 * MIB);
        let (record_gone, data) = delete(&local, &volume, &snapshot);
        let reaping = root.path().join(REAPING);
        assert!(record_gone, "{what}: the record is gone");
        assert!(!data.exists(), "{what}: the name is free");
        assert!(
            allocated_under(&reaping) > 200 * MIB,
            "{what}: the call answered before the data was freed"
        );
        assert!(
            local.reaper().wait_idle(Duration::from_secs(60)),
            "{what}: freed after"
        );
        assert!(names(&reaping).is_empty(), "{what}");
    }
}

#[test]
fn open_hands_large_leftovers_to_the_reaper_without_freeing_them() {
    let root = tempfile::tempdir().expect("tempdir");
    let volumes = root.path().join(VOLUMES);
    fs::create_dir_all(&volumes).expect("mkdir");
    // A clone cut short by a crash: a large temporary no record holds.
    let key = Key::for_volume("clone");
    write_data(&volumes.join(format!(".{key}.tmp")), 256 * MIB);
    let local = LocalBackend::open_with(root.path(), "n1", SLOW).expect("open");
    assert!(names(&volumes).is_empty(), "nothing left among the volumes");
    assert!(
        allocated_under(&root.path().join(REAPING)) > 200 * MIB,
        "open answered before freeing it"
    );
    assert!(local.reaper().wait_idle(Duration::from_secs(60)), "freed");
}

#[test]
fn a_volume_made_again_keeps_its_own_data_while_and_after_the_old_is_freed() {
    let root = tempfile::tempdir().expect("tempdir");
    let key = Key::for_volume("again");
    let data = root.path().join(VOLUMES).join(key.as_str());
    let reaping = root.path().join(REAPING);
    let local = LocalBackend::open_with(root.path(), "n1", SLOW).expect("open");
    let make = |local: &LocalBackend| {
        local
            .create(&key, &record(&key, Layout::Directory), &Fill::Empty)
            .expect("create")
    };
    make(&local);
    write_data(&data.join("old"), 256 * MIB);
    local.delete(&key).expect("delete the first");
    make(&local);
    fs::write(data.join("new"), b"mine").expect("write");
    // Stopped (as a restart would) with the old data half freed.
    drop(local);
    assert!(
        allocated_under(&reaping) > 128 * MIB,
        "the old data is still being freed"
    );
    let local = LocalBackend::open(root.path(), "n1").expect("reopen");
    assert_eq!(names(&data), vec!["new".to_string()], "only its own data");
    assert_eq!(fs::read(data.join("new")).expect("read"), b"mine");
    // A second delete while the first one's data is freed does not meet it.
    write_data(&data.join("more"), 32 * MIB);
    local.delete(&key).expect("delete the second");
    assert!(local.reaper().wait_idle(Duration::from_secs(60)), "freed");
    assert!(names(&reaping).is_empty() && !data.exists());
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
        let mut page = WireVolumes::default();
        local.list_after(after, limit, &mut page).expect("page");
        page.sorted().iter().map(|v| v.id.to_string()).collect()
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

#[test]
fn a_project_whose_files_are_still_being_freed_is_not_leased() {
    let root = tempfile::tempdir().expect("tempdir");
    let local = LocalBackend::open_with(root.path(), "n1", SLOW).expect("open");
    let key = Key::for_volume("q");
    let first = quota::first_candidate(key.as_str());
    let deleted = root.path().join("deleted");
    write_data(&deleted, 64 * MIB);
    local
        .reaper()
        .take_in_project(&deleted, Some(first))
        .expect("take");
    assert_ne!(local.lease_project(&key).expect("lease").id, first, "held");
    assert!(local.reaper().wait_idle(Duration::from_secs(60)), "freed");
    assert_eq!(local.lease_project(&key).expect("lease").id, first, "free");
}
