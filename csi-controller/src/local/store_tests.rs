use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc;

use super::*;
use crate::record::Layout;
use driver_contract::request::AccessType;

fn volume(key: &str, size: i64) -> VolumeRecord {
    VolumeRecord {
        name: format!("pvc-{key}"),
        volume_id: format!("local:{key}:n1"),
        capacity_bytes: size,
        parameters: BTreeMap::new(),
        access_type: AccessType::Mount,
        layout: Layout::Directory,
        content_source: None,
        volume_context: BTreeMap::new(),
        accessible_topology: Vec::new(),
        created_unix_secs: 1,
        mutable_parameters: BTreeMap::new(),
    }
}

fn put(key: &str, size: i64) -> Change {
    Change::PutVolume {
        key: key.into(),
        record: volume(key, size),
    }
}

fn del(key: &str) -> Change {
    Change::DeleteVolume { key: key.into() }
}

fn sizes(store: &Store) -> Vec<(String, i64)> {
    store
        .volumes()
        .expect("records")
        .into_iter()
        .map(|r| {
            (
                r.name.trim_start_matches("pvc-").to_string(),
                r.capacity_bytes,
            )
        })
        .collect()
}

#[test]
fn replay_gives_back_what_was_committed() {
    type Row = (&'static str, Vec<Vec<Change>>, Vec<(&'static str, i64)>);
    let rows: Vec<Row> = vec![
        ("nothing", vec![], vec![]),
        ("one put", vec![vec![put("a", 1)]], vec![("a", 1)]),
        (
            "a put replaced",
            vec![vec![put("a", 1)], vec![put("a", 2)]],
            vec![("a", 2)],
        ),
        (
            "a put deleted",
            vec![vec![put("a", 1), put("b", 1)], vec![del("a")]],
            vec![("b", 1)],
        ),
        ("a delete of nothing", vec![vec![del("z")]], vec![]),
    ];
    for (name, commits, want) in rows {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("records.log");
        let store = Store::open(&path).expect("open");
        for changes in commits {
            store.commit(changes).expect("commit");
        }
        let want: Vec<(String, i64)> = want.into_iter().map(|(k, s)| (k.into(), s)).collect();
        assert_eq!(sizes(&store), want, "{name}: in memory");
        drop(store);
        assert_eq!(
            sizes(&Store::open(&path).expect("reopen")),
            want,
            "{name}: replayed"
        );
    }
}

#[test]
fn a_torn_tail_is_cut_and_damage_before_records_is_refused() {
    let good = |k: &str| {
        let mut line = serde_json::to_vec(&put(k, 1)).expect("encode");
        line.push(b'\n');
        line
    };
    let torn = |k: &str| good(k)[..20].to_vec();
    type Row = (&'static str, Vec<Vec<u8>>, Option<Vec<&'static str>>);
    let rows: Vec<Row> = vec![
        (
            "half a line at the end",
            vec![good("a"), torn("b")],
            Some(vec!["a"]),
        ),
        (
            "zeros at the end",
            vec![good("a"), vec![0; 64]],
            Some(vec!["a"]),
        ),
        (
            "an undecodable whole line at the end",
            vec![good("a"), b"{}\n".to_vec()],
            Some(vec!["a"]),
        ),
        (
            "a put whose record does not decode, at the end",
            vec![
                good("a"),
                br#"{"op":"putVolume","key":"b","record":{"name":1}}"#.to_vec(),
                b"\n".to_vec(),
            ],
            Some(vec!["a"]),
        ),
        (
            "records after a bad line",
            vec![good("a"), b"{}\n".to_vec(), good("c")],
            None,
        ),
    ];
    for (name, parts, want) in rows {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("records.log");
        std::fs::write(&path, parts.concat()).expect("write");
        match (Store::open(&path), want) {
            (Ok(store), Some(want)) => {
                let keys: Vec<String> = store.volume_keys();
                assert_eq!(keys, want, "{name}");
                store
                    .commit(vec![put("d", 1)])
                    .expect("commit after the cut");
                drop(store);
                let mut want: Vec<String> = want.into_iter().map(String::from).collect();
                want.push("d".into());
                assert_eq!(
                    Store::open(&path).expect("reopen").volume_keys(),
                    want,
                    "{name}"
                );
            }
            (Err(Error::CorruptMetadata { .. }), None) => {}
            (other, want) => panic!("{name}: got {other:?}, wanted {want:?}"),
        }
    }
}

/// A sync that reports when it starts and waits for the test's word the first time.
fn held_sync() -> (SyncFn, mpsc::Receiver<()>, mpsc::SyncSender<()>) {
    let (entered_tx, entered_rx) = mpsc::sync_channel(1);
    let (go_tx, go_rx) = mpsc::sync_channel::<()>(1);
    let first = Mutex::new(Some((entered_tx, go_rx)));
    let sync: SyncFn = Box::new(move |file: &File| {
        if let Some((entered, go)) = first.lock().expect("lock").take() {
            entered.send(()).expect("entered");
            go.recv().expect("go");
        }
        file.sync_data()
    });
    (sync, entered_rx, go_tx)
}

#[test]
fn concurrent_changes_share_fsyncs() {
    const WRITERS: usize = 16;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("records.log");
    let (sync, entered, go) = held_sync();
    let store = Arc::new(Store::open_with(&path, sync).expect("open"));
    let first = {
        let store = store.clone();
        std::thread::spawn(move || store.commit(vec![put("k0", 1)]))
    };
    entered.recv().expect("the first commit syncs");
    let rest: Vec<_> = (1..WRITERS)
        .map(|i| {
            let store = store.clone();
            std::thread::spawn(move || store.commit(vec![put(&format!("k{i}"), 1)]))
        })
        .collect();
    // Every other writer queues behind the held sync before it is let go.
    while store.queued() < WRITERS - 1 {
        std::thread::yield_now();
    }
    go.send(()).expect("go");
    for writer in std::iter::once(first).chain(rest) {
        writer.join().expect("join").expect("commit");
    }
    assert_eq!(store.volumes().expect("records").len(), WRITERS);
    assert_eq!(
        store.syncs(),
        2,
        "{WRITERS} concurrent changes: one sync for the first, one for the rest"
    );
    drop(store);
    assert_eq!(
        Store::open(&path)
            .expect("reopen")
            .volumes()
            .expect("records")
            .len(),
        WRITERS
    );
}

#[test]
fn a_change_alone_costs_one_fsync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("records.log")).expect("open");
    for i in 0..5 {
        store
            .commit(vec![put(&format!("k{i}"), 1)])
            .expect("commit");
    }
    store
        .commit(vec![del("k0"), del("k1")])
        .expect("commit two");
    assert_eq!(store.syncs(), 6);
}

#[test]
fn a_failed_fsync_fails_its_writers_and_every_later_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("records.log");
    let store = Store::open_with(
        &path,
        Box::new(|_: &File| Err(std::io::Error::from_raw_os_error(nix::libc::EIO))),
    )
    .expect("open");
    let first = store.commit(vec![put("a", 1)]);
    assert!(matches!(first, Err(Error::Io { .. })), "{first:?}");
    assert!(
        store.volume("a").expect("read").is_none(),
        "an unsynced change is not visible"
    );
    let later = store.commit(vec![put("b", 1)]);
    assert!(
        later
            .as_ref()
            .is_err_and(|e| e.to_string().contains("restart")),
        "{later:?}"
    );
}

#[test]
fn the_log_is_rewritten_when_dead_lines_pile_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("records.log");
    let store = Store::open(&path).expect("open");
    store.commit(vec![put("kept", 7)]).expect("commit");
    let churn: Vec<Change> = (0..COMPACT_SLACK + 10)
        .flat_map(|i| [put(&format!("t{i}"), 1), del(&format!("t{i}"))])
        .collect();
    store.commit(churn).expect("churn");
    let lines = std::fs::read(&path)
        .expect("read")
        .iter()
        .filter(|b| **b == b'\n')
        .count();
    assert_eq!(lines, 1, "only the live record is left");
    store
        .commit(vec![put("after", 1)])
        .expect("commit after rewrite");
    drop(store);
    let reopened = Store::open(&path).expect("reopen");
    assert_eq!(
        sizes(&reopened),
        vec![("after".to_string(), 1), ("kept".to_string(), 7)]
    );
}

#[test]
fn a_second_store_on_the_same_log_is_refused_while_the_first_is_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("records.log");
    let first = Store::open(&path).expect("open");
    let second = Store::open(&path);
    assert!(matches!(second, Err(Error::RootHeld { .. })), "{second:?}");
    drop(first);
    Store::open(&path).expect("open after the first closed");
}

fn put_as(key: &str, size: i64, layout: Layout) -> Change {
    Change::PutVolume {
        key: key.into(),
        record: VolumeRecord {
            layout,
            ..volume(key, size)
        },
    }
}

#[test]
fn reservations_and_project_ids_follow_the_records_and_survive_a_reopen() {
    let quota = |project| Layout::Quota { project };
    // (case, commits, reservations wanted as (key, capacity), project ids in use)
    type Row = (
        &'static str,
        Vec<Vec<Change>>,
        Vec<(&'static str, i64)>,
        Vec<u32>,
    );
    let rows: Vec<Row> = vec![
        (
            "a directory reserves nothing",
            vec![vec![put("d", 5)]],
            vec![],
            vec![],
        ),
        (
            "image, block and quota volumes reserve their capacity",
            vec![vec![
                put_as("i", 1, Layout::Image),
                put_as("b", 2, Layout::Block),
                put_as("q", 3, quota(7)),
            ]],
            vec![("b", 2), ("i", 1), ("q", 3)],
            vec![7],
        ),
        (
            "an expansion replaces the reservation",
            vec![
                vec![put_as("q", 3, quota(7))],
                vec![put_as("q", 9, quota(7))],
            ],
            vec![("q", 9)],
            vec![7],
        ),
        (
            "a delete frees the reservation and the project id",
            vec![
                vec![put_as("q", 3, quota(7)), put_as("r", 4, quota(8))],
                vec![del("q")],
            ],
            vec![("r", 4)],
            vec![8],
        ),
        (
            "a put under another layout drops the old project id",
            vec![
                vec![put_as("q", 3, quota(7))],
                vec![put_as("q", 3, Layout::Directory)],
            ],
            vec![],
            vec![],
        ),
        (
            "an id two records hold stays used until both are gone",
            vec![
                vec![put_as("q", 1, quota(7)), put_as("r", 1, quota(7))],
                vec![del("q")],
            ],
            vec![("r", 1)],
            vec![7],
        ),
    ];
    for (name, commits, want, projects) in rows {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("records.log");
        let store = Store::open(&path).expect("open");
        for changes in commits {
            store.commit(changes).expect("commit");
        }
        let check = |store: &Store, when: &str| {
            let got: Vec<(String, i64)> = store
                .reservations()
                .into_iter()
                .map(|(k, r)| (k, r.capacity))
                .collect();
            let want: Vec<(String, i64)> = want.iter().map(|(k, s)| (k.to_string(), *s)).collect();
            assert_eq!(got, want, "{name}: reservations {when}");
            let used: Vec<u32> = (0..16).filter(|id| store.project_used(*id)).collect();
            assert_eq!(used, projects, "{name}: project ids {when}");
        };
        check(&store, "in memory");
        drop(store);
        check(&Store::open(&path).expect("reopen"), "after reopen");
    }
}

fn snap(key: &str) -> Change {
    Change::PutSnapshot {
        key: key.into(),
        record: SnapshotRecord {
            name: format!("snap-{key}"),
            snapshot_id: format!("local-snap:{key}:n1"),
            source_volume_id: format!("local:{key}:n1"),
            size_bytes: 3,
            layout: Layout::Directory,
            created_unix_secs: 1,
            created_nanos: 2,
            group_snapshot_id: String::new(),
        },
    }
}

/// Everything a replay rebuilds: records, reservations and project ids.
#[derive(Debug, PartialEq)]
struct Replayed {
    volumes: Vec<VolumeRecord>,
    snapshots: Vec<SnapshotRecord>,
    reservations: Vec<(String, Reservation)>,
    projects: Vec<u32>,
}

fn replayed(store: &Store) -> Replayed {
    Replayed {
        volumes: store.volumes().expect("volumes"),
        snapshots: store.snapshots().expect("snapshots"),
        reservations: store.reservations(),
        projects: (0..64).filter(|id| store.project_used(*id)).collect(),
    }
}

fn line_count(path: &std::path::Path) -> usize {
    std::fs::read(path)
        .expect("read")
        .iter()
        .filter(|b| **b == b'\n')
        .count()
}

/// `volumes` live volumes (every third a quota volume, every fifth an image), as many
/// put and removed again, `snapshots` live snapshots, and keys JSON must escape.
fn history(volumes: usize, snapshots: usize) -> Vec<Vec<Change>> {
    let layout = |i: usize| match i % 15 {
        0 | 3 | 6 | 9 | 12 => Layout::Quota {
            project: (i % 60) as u32,
        },
        5 | 10 => Layout::Image,
        _ => Layout::Directory,
    };
    let key = |i: usize| match i % 7 {
        0 => format!("q\"uote\\d-{i}"),
        1 => format!("ünïcode-{i}"),
        _ => format!("v{i:06}"),
    };
    let live: Vec<Change> = (0..volumes)
        .map(|i| put_as(&key(i), i as i64 + 1, layout(i)))
        .collect();
    let dead: Vec<Change> = (0..volumes)
        .flat_map(|i| [put(&format!("gone{i}"), 1), del(&format!("gone{i}"))])
        .collect();
    let snaps: Vec<Change> = (0..snapshots).map(|i| snap(&format!("s{i:05}"))).collect();
    vec![live, dead, snaps]
}

#[test]
fn a_rewritten_log_replays_to_the_same_state() {
    let chunk = COMPACT_CHUNK;
    // (case, live volumes, live snapshots)
    let rows: &[(&str, usize, usize)] = &[
        ("nothing", 0, 0),
        ("one volume", 1, 0),
        ("one snapshot", 0, 1),
        ("a chunk less one", chunk - 1, 1),
        ("exactly a chunk of each", chunk, chunk),
        ("a chunk and one", chunk + 1, chunk + 1),
        ("many chunks", 10 * chunk + 7, 3 * chunk + 2),
    ];
    for (name, volumes, snapshots) in rows {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("records.log");
        let store = Store::open(&path).expect("open");
        for changes in history(*volumes, *snapshots) {
            store.commit(changes).expect("commit");
        }
        let before = replayed(&store);
        assert_eq!(before.volumes.len(), *volumes, "{name}");
        store.compact().expect("compact");
        assert_eq!(
            replayed(&store),
            before,
            "{name}: in memory after the rewrite"
        );
        assert_eq!(
            line_count(&path),
            volumes + snapshots,
            "{name}: one line each"
        );
        assert!(!path.with_extension("log.tmp").exists(), "{name}");
        store.commit(vec![put("after", 9)]).expect("commit");
        store.commit(vec![del("after")]).expect("commit");
        drop(store);
        let reopened = Store::open(&path).expect("reopen");
        assert_eq!(replayed(&reopened), before, "{name}: replayed");
    }
}

#[test]
fn a_crash_at_each_step_of_a_rewrite_replays_the_same_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("records.log");
    let store = Store::open(&path).expect("open");
    for changes in history(3 * COMPACT_CHUNK + 5, 20) {
        store.commit(changes).expect("commit");
    }
    let want = replayed(&store);
    let old = std::fs::read(&path).expect("old log");
    store.compact().expect("compact");
    let new = std::fs::read(&path).expect("new log");
    drop(store);
    assert!(
        new.len() < old.len() / 2,
        "the rewrite dropped the dead lines"
    );
    // (step the crash came at, the log, the temporary left beside it)
    type Row<'a> = (&'static str, &'a [u8], Option<&'a [u8]>);
    let rows: Vec<Row> = vec![
        ("before the temporary is made", &old[..], None),
        (
            "the temporary made, nothing written",
            &old[..],
            Some(&[][..]),
        ),
        (
            "half the temporary written",
            &old[..],
            Some(&new[..new.len() / 2]),
        ),
        (
            "a torn line at the temporary's end",
            &old[..],
            Some(&new[..new.len() - 3]),
        ),
        (
            "the temporary whole and synced; the rename not done, or lost with the directory unsynced",
            &old[..],
            Some(&new[..]),
        ),
        ("the rename done and kept", &new[..], None),
    ];
    for (step, log, temp) in rows {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("records.log");
        let temp_path = path.with_extension("log.tmp");
        std::fs::write(&path, log).expect("write log");
        if let Some(temp) = temp {
            std::fs::write(&temp_path, temp).expect("write temporary");
        }
        let store = Store::open(&path).expect("open");
        assert_eq!(replayed(&store), want, "{step}");
        assert!(
            !temp_path.exists(),
            "{step}: the temporary is removed at open"
        );
        store.commit(vec![put("after", 9)]).expect("commit");
        drop(store);
        let reopened = Store::open(&path).expect("reopen");
        let after = replayed(&reopened);
        assert_eq!(after.volumes.len(), want.volumes.len() + 1, "{step}");
        assert_eq!(
            reopened
                .volume("after")
                .expect("read")
                .map(|r| r.capacity_bytes),
            Some(9),
            "{step}"
        );
    }
}

#[test]
fn replay_keeps_a_records_bytes_as_read_whatever_the_lines_shape() {
    let record = volume("a", 5);
    let compact = serde_json::to_string(&record).expect("encode");
    let pretty = serde_json::to_string_pretty(&record)
        .expect("encode")
        .replace('\n', " ");
    let snapshot = match snap("s") {
        Change::PutSnapshot { record, .. } => record,
        _ => unreachable!(),
    };
    let snap_json = serde_json::to_string(&snapshot).expect("encode");
    // (case, the line, its key, the bytes kept for the record)
    let rows: Vec<(&str, String, &str, &str)> = vec![
        (
            "as this store writes it",
            format!(r#"{{"op":"putVolume","key":"a","record":{compact}}}"#),
            "a",
            &compact,
        ),
        (
            "a key JSON escapes",
            format!(r#"{{"op":"putVolume","key":"q\"k\\","record":{compact}}}"#),
            "q\"k\\",
            &compact,
        ),
        (
            "a record with spaces: kept as read",
            format!(r#"{{"op":"putVolume","key":"a","record":{pretty}}}"#),
            "a",
            &pretty,
        ),
        (
            "fields in another order: decoded whole and encoded",
            format!(r#"{{"key":"a","record":{pretty},"op":"putVolume"}}"#),
            "a",
            &compact,
        ),
        (
            "a field after the record: decoded whole and encoded",
            format!(r#"{{"op":"putVolume","key":"a","record":{pretty},"more":1}}"#),
            "a",
            &compact,
        ),
    ];
    for (name, line, key, kept) in rows {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("records.log");
        let snap_line = format!(r#"{{"op":"putSnapshot","key":"s","record":{snap_json}}}"#);
        std::fs::write(&path, format!("{line}\n{snap_line}\n")).expect("write");
        let store = Store::open(&path).expect("open");
        let got = store.lock().volumes.get(key).cloned();
        assert_eq!(got.as_deref(), Some(kept.as_bytes()), "{name}");
        assert_eq!(
            store.volume(key).expect("read"),
            Some(record.clone()),
            "{name}"
        );
        assert_eq!(
            store.snapshot("s").expect("read"),
            Some(snapshot.clone()),
            "{name}"
        );
        let got = store.lock().snapshots.get("s").cloned();
        assert_eq!(got.as_deref(), Some(snap_json.as_bytes()), "{name}");
    }
}

/// The capacity of a record's JSON.
fn capacity_of(json: &[u8]) -> i64 {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Capacity {
        capacity_bytes: i64,
    }
    let capacity: Capacity = serde_json::from_slice(json).expect("a volume record");
    capacity.capacity_bytes
}

#[test]
fn a_page_hands_over_only_the_records_it_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("records.log")).expect("open");
    let keys = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
    let changes = keys
        .iter()
        .zip(1..)
        .map(|(key, size)| put(key, size))
        .collect();
    store.commit(changes).expect("commit");
    type Row = (
        &'static str,
        Bound<&'static str>,
        usize,
        Vec<i64>,
        Option<&'static str>,
    );
    let rows: Vec<Row> = vec![
        (
            "the first three",
            Bound::Unbounded,
            3,
            vec![1, 2, 3],
            Some("c"),
        ),
        (
            "after a key",
            Bound::Excluded("c"),
            2,
            vec![4, 5],
            Some("e"),
        ),
        ("from a key", Bound::Included("c"), 2, vec![3, 4], Some("d")),
        (
            "from a key between two",
            Bound::Included("cc"),
            1,
            vec![4],
            Some("d"),
        ),
        (
            "fewer left than asked",
            Bound::Excluded("h"),
            5,
            vec![9, 10],
            Some("j"),
        ),
        ("none left", Bound::Excluded("j"), 5, vec![], None),
        ("none asked", Bound::Unbounded, 0, vec![], None),
    ];
    for (name, start, limit, want, last) in rows {
        let mut sizes = Vec::new();
        let got_last = store
            .volume_page(start, limit, |json| {
                sizes.push(capacity_of(json));
                Ok(())
            })
            .expect("page");
        // A page of 500 used to decode whole records 256 at a time: 512 of them.
        assert_eq!(sizes, want, "{name}");
        assert_eq!(got_last.as_deref(), last, "{name}: last key");
    }
}
