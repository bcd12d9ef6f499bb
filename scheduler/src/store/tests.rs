use super::*;
use bytes::Bytes;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime};

/// A directory under the system's temp dir, removed with everything in it
/// when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "pmp-store-test-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// Where a store may be made: a path that does not exist yet.
    fn store_root(&self) -> PathBuf {
        self.0.join("nested").join("store")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn new_store() -> (Scratch, Store) {
    let scratch = Scratch::new();
    let store = Store::open(&scratch.store_root()).unwrap();
    (scratch, store)
}

fn entry(frames: &[&[u8]]) -> Entry {
    Entry {
        meta: Meta {
            function: "module.f".into(),
            state: State::Done,
            submitted: 1.0,
            started: 2.5,
            finished: 3.25,
            host: "node7".into(),
            pid: 4242,
        },
        frames: frames.iter().map(|f| Bytes::copy_from_slice(f)).collect(),
    }
}

fn input(call: &[&[u8]], dependencies: &[&str]) -> Input {
    Input {
        function: "module.g".into(),
        submitted: 7.5,
        pickle: Bytes::from_static(b"cloudpickled g"),
        call: call.iter().map(|f| Bytes::copy_from_slice(f)).collect(),
        dependencies: dependencies.iter().map(|d| d.to_string()).collect(),
        resources: r#"{"cores": 2}"#.into(),
    }
}

fn assert_invalid_input(result: Result<Option<Input>, StoreError>, what: &str) {
    match result {
        Err(StoreError::Invalid { .. }) => {}
        other => panic!("{what}: expected Invalid, got {other:?}"),
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn assert_invalid(result: Result<Option<Entry>, StoreError>, what: &str) {
    match result {
        Err(StoreError::Invalid { .. }) => {}
        other => panic!("{what}: expected Invalid, got {other:?}"),
    }
}

#[test]
fn open_creates_a_private_store_once() {
    let scratch = Scratch::new();
    let root = scratch.store_root();
    let store = Store::open(&root).unwrap();
    assert_eq!(store.root(), root);
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&root.join("entries")), 0o700);
    assert_eq!(mode(&root.join("key")), 0o600);
    assert_eq!(fs::metadata(root.join("key")).unwrap().len(), 32);
    assert_eq!(fs::read_to_string(root.join("format")).unwrap(), "1\n");
    let key = fs::read(root.join("key")).unwrap();

    let again = Store::open(&root).unwrap();
    assert_eq!(fs::read(root.join("key")).unwrap(), key);
    store.write("k", &entry(&[b"x"])).unwrap();
    assert_eq!(again.read("k").unwrap(), Some(entry(&[b"x"])));
    // The store's own files are its whole root: no temp file was left.
    let mut names = files::names(&root).unwrap();
    names.sort();
    assert_eq!(
        names,
        ["entries", "format", "inputs", "jobs", "key", "locks", "logs"]
    );
    assert_eq!(mode(&root.join("inputs")), 0o700);
}

#[test]
fn stores_opened_at_once_agree_on_the_key() {
    let scratch = Scratch::new();
    let root = scratch.store_root();
    let threads = 8;
    let barrier = Arc::new(Barrier::new(threads));
    let stores: Vec<Store> = (0..threads)
        .map(|_| {
            let (root, barrier) = (root.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                Store::open(&root).unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    for (i, store) in stores.iter().enumerate() {
        store.write(&format!("k{i}"), &entry(&[b"v"])).unwrap();
    }
    for reader in &stores {
        for i in 0..threads {
            assert!(reader.read(&format!("k{i}")).unwrap().is_some());
        }
    }
}

#[test]
fn entries_round_trip_large_frames_included() {
    let (_scratch, store) = new_store();
    let large: Vec<u8> = (0..(5 << 20) + 3).map(|i| (i * 7 % 251) as u8).collect();
    let written = entry(&[b"small", b"", &large]);
    store.write("big", &written).unwrap();
    let read = store.read("big").unwrap().unwrap();
    assert_eq!(read, written);

    let mut failed = entry(&[]);
    failed.meta.state = State::Failed;
    store.write("failed", &failed).unwrap();
    assert_eq!(store.read("failed").unwrap(), Some(failed));
    assert_eq!(store.read("absent").unwrap(), None);
    assert!(store.contains("big") && !store.contains("absent"));
}

#[test]
fn a_rewritten_entry_replaces_the_old_one() {
    let (_scratch, store) = new_store();
    store.write("k", &entry(&[b"old"])).unwrap();
    store.write("k", &entry(&[b"new"])).unwrap();
    assert_eq!(store.read("k").unwrap(), Some(entry(&[b"new"])));
    assert_eq!(store.keys().unwrap(), ["k"]);
}

#[test]
fn a_changed_byte_anywhere_makes_an_entry_invalid() {
    let (scratch, store) = new_store();
    store.write("k", &entry(&[b"abc", b"defg"])).unwrap();
    let path = scratch.store_root().join("entries").join("k");
    let good = fs::read(&path).unwrap();
    for at in 0..good.len() {
        let mut bad = good.clone();
        bad[at] ^= 0x01;
        fs::write(&path, &bad).unwrap();
        assert_invalid(store.read("k"), &format!("byte {at} flipped"));
    }

    let large = vec![3u8; (4 << 20) + 100];
    store.write("large", &entry(&[&large])).unwrap();
    let path = scratch.store_root().join("entries").join("large");
    let good = fs::read(&path).unwrap();
    for at in [good.len() - 1, good.len() - 50, good.len() / 2, 200] {
        let mut bad = good.clone();
        bad[at] ^= 0x80;
        fs::write(&path, &bad).unwrap();
        assert_invalid(store.read("large"), &format!("byte {at} of a large entry"));
    }
}

#[test]
fn a_truncated_or_extended_entry_is_invalid() {
    let (scratch, store) = new_store();
    store.write("k", &entry(&[b"abc", b"defg"])).unwrap();
    let path = scratch.store_root().join("entries").join("k");
    let good = fs::read(&path).unwrap();
    for len in 0..good.len() {
        fs::write(&path, &good[..len]).unwrap();
        assert_invalid(store.read("k"), &format!("truncated to {len} bytes"));
    }
    let mut longer = good.clone();
    longer.push(0);
    fs::write(&path, &longer).unwrap();
    assert_invalid(store.read("k"), "one byte appended");
    fs::write(&path, &good).unwrap();
    assert!(store.read("k").unwrap().is_some());
}

#[test]
fn an_entry_moved_to_another_key_is_invalid() {
    let (scratch, store) = new_store();
    store.write("a", &entry(&[b"result of a"])).unwrap();
    let entries = scratch.store_root().join("entries");
    fs::rename(entries.join("a"), entries.join("b")).unwrap();
    assert_invalid(store.read("b"), "a's entry read as b");
}

#[test]
fn an_entry_of_another_store_is_invalid() {
    let (scratch, store) = new_store();
    let (_other_scratch, other) = new_store();
    other.write("k", &entry(&[b"x"])).unwrap();
    fs::copy(
        other.root().join("entries").join("k"),
        scratch.store_root().join("entries").join("k"),
    )
    .unwrap();
    assert_invalid(store.read("k"), "another store's entry");
}

#[test]
fn arbitrary_bytes_are_invalid() {
    let (scratch, store) = new_store();
    let path = scratch.store_root().join("entries").join("k");
    let mut header_with_huge_counts = b"PMPENTRY".to_vec();
    header_with_huge_counts.extend_from_slice(&FORMAT.to_le_bytes());
    header_with_huge_counts.extend_from_slice(&[0; 32]);
    header_with_huge_counts.extend_from_slice(&0u32.to_le_bytes());
    header_with_huge_counts.extend_from_slice(&u32::MAX.to_le_bytes());
    header_with_huge_counts.extend_from_slice(&u64::MAX.to_le_bytes());
    let mut newer = b"PMPENTRY".to_vec();
    newer.extend_from_slice(&(FORMAT + 1).to_le_bytes());
    newer.extend_from_slice(&[0; 64]);
    let mut random = vec![0u8; 10_000];
    rand::fill(random.as_mut_slice());
    let contents: [&[u8]; 6] = [
        b"",
        b"cos\nsystem\n(S'echo pwned'\ntR.",
        &random,
        &header_with_huge_counts,
        &newer,
        b"PMPENTRY",
    ];
    for content in contents {
        fs::write(&path, content).unwrap();
        assert_invalid(
            store.read("k"),
            &format!("{} arbitrary bytes", content.len()),
        );
    }
}

#[test]
fn a_newer_format_is_refused() {
    let (scratch, store) = new_store();
    drop(store);
    let root = scratch.store_root();
    fs::write(root.join("format"), format!("{}\n", FORMAT + 1)).unwrap();
    match Store::open(&root) {
        Err(e @ StoreError::Format { found, .. }) => {
            assert_eq!(found, FORMAT + 1);
            assert!(e.to_string().contains("newer pmp"), "{e}");
        }
        other => panic!("expected Format, got {other:?}"),
    }
    fs::write(root.join("format"), "one").unwrap();
    assert!(matches!(
        Store::open(&root),
        Err(StoreError::Invalid { .. })
    ));
}

#[test]
fn a_bad_key_file_is_refused() {
    let (scratch, store) = new_store();
    drop(store);
    let key = scratch.store_root().join("key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).unwrap();
    match Store::open(&scratch.store_root()) {
        Err(e @ StoreError::Insecure { .. }) => {
            assert!(e.to_string().contains("chmod 600"), "{e}")
        }
        other => panic!("expected Insecure, got {other:?}"),
    }
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(&key, [1u8; 31]).unwrap();
    assert!(matches!(
        Store::open(&scratch.store_root()),
        Err(StoreError::Invalid { .. })
    ));
}

#[test]
fn keys_lists_entries_only() {
    let (scratch, store) = new_store();
    for key in ["b", "a.lock", "c-1_x"] {
        store.write(key, &entry(&[b"v"])).unwrap();
    }
    assert!(store.try_lock("b", "host 1").unwrap());
    assert!(store.try_lock("pending", "host 1").unwrap());
    let entries = scratch.store_root().join("entries");
    fs::write(entries.join(".tmp-0123456789abcdef"), b"half written").unwrap();
    assert_eq!(store.keys().unwrap(), ["a.lock", "b", "c-1_x"]);
    assert!(matches!(
        store.read(".tmp-0123456789abcdef"),
        Err(StoreError::InvalidKey(_))
    ));
    // A key named like a lock is an entry, not b's lock.
    assert_eq!(store.read("a.lock").unwrap(), Some(entry(&[b"v"])));
}

#[test]
fn remove_and_clear() {
    let (scratch, store) = new_store();
    for key in ["a", "b", "c"] {
        store.write(key, &entry(&[b"v"])).unwrap();
    }
    assert!(store.remove("a").unwrap());
    assert!(!store.remove("a").unwrap());
    assert_eq!(store.keys().unwrap(), ["b", "c"]);

    let entries = scratch.store_root().join("entries");
    let stray = entries.join(".tmp-00000000000000aa");
    let fresh = entries.join(".tmp-00000000000000bb");
    fs::write(&stray, b"killed writer").unwrap();
    fs::write(&fresh, b"writer at work").unwrap();
    let long_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
    File::options()
        .write(true)
        .open(&stray)
        .unwrap()
        .set_modified(long_ago)
        .unwrap();
    assert!(store.try_lock("b", "host 1").unwrap());

    assert_eq!(store.clear().unwrap(), 2);
    assert_eq!(store.keys().unwrap(), Vec::<String>::new());
    assert!(!stray.exists());
    assert!(fresh.exists(), "a temp file being written stays");
    assert_eq!(store.lock_owner("b").as_deref(), Some("host 1"));
    assert_eq!(store.clear().unwrap(), 0);
    // Still the same store, with the same key.
    store.write("d", &entry(&[b"v"])).unwrap();
    let reopened = Store::open(store.root()).unwrap();
    assert!(reopened.read("d").unwrap().is_some());
}

#[test]
fn a_lock_is_held_once() {
    let (_scratch, store) = new_store();
    assert_eq!(store.lock_owner("k"), None);
    assert!(store.try_lock("k", "node1 17").unwrap());
    assert!(!store.try_lock("k", "node2 18").unwrap());
    assert_eq!(store.lock_owner("k").as_deref(), Some("node1 17"));
    store.unlock("k").unwrap();
    assert_eq!(store.lock_owner("k"), None);
    store.unlock("k").unwrap();
    assert!(store.try_lock("k", "node2 18").unwrap());
    assert_eq!(store.lock_owner("k").as_deref(), Some("node2 18"));
}

#[test]
fn a_lock_a_dead_process_left_is_gone_and_listed_but_a_batch_jobs_is_not_stale() {
    let (_scratch, store) = new_store();
    // A process that has ended: its pid no longer runs (and is not reused this soon).
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let host = crate::host::name();
    let me = std::process::id();
    store.try_lock("dead", &format!("{host} {dead}")).unwrap();
    store.try_lock("alive", &format!("{host} {me}")).unwrap();
    store
        .try_lock("job", &format!("batch {host} {dead}"))
        .unwrap();
    store.write_job("job", "83").unwrap();
    store
        .try_lock("elsewhere", &format!("{host}-not-this-one {dead}"))
        .unwrap();
    assert_eq!(
        store.lock_keys().unwrap(),
        ["alive", "dead", "elsewhere", "job"]
    );
    assert!(store.lock_owner_gone("dead") && store.lock_is_stale("dead"));
    assert!(!store.lock_owner_gone("alive") && !store.lock_is_stale("alive"));
    // Its job goes on without the client that submitted it: gone, not stale.
    assert!(store.lock_owner_gone("job") && !store.lock_is_stale("job"));
    assert!(!store.lock_owner_gone("elsewhere") && !store.lock_is_stale("elsewhere"));
    assert!(!store.lock_owner_gone("none"));
    assert!(store.remove_job("job").unwrap() && !store.remove_job("job").unwrap());
    assert_eq!(store.job_keys().unwrap(), Vec::<String>::new());
}

#[test]
fn of_racing_lockers_one_wins() {
    let (_scratch, store) = new_store();
    let threads = 8;
    let barrier = Arc::new(Barrier::new(threads));
    let wins: usize = (0..threads)
        .map(|i| {
            let (store, barrier) = (store.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                store.try_lock("k", &format!("thread {i}")).unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| usize::from(t.join().unwrap()))
        .sum();
    assert_eq!(wins, 1);
}

#[test]
fn concurrent_writers_leave_a_valid_entry() {
    let (_scratch, store) = new_store();
    store.write("k", &entry(&[b"first"])).unwrap();
    let writers = 4;
    let barrier = Arc::new(Barrier::new(writers + 1));
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (store, barrier) = (store.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for round in 0..20 {
                    let frame = vec![w as u8; 1000 + round * 997 + w * 13];
                    store.write("k", &entry(&[b"by", &frame])).unwrap();
                }
            })
        })
        .collect();
    barrier.wait();
    // Readers during the race always find a whole, valid entry.
    for _ in 0..50 {
        assert!(store.read("k").unwrap().is_some());
    }
    for handle in handles {
        handle.join().unwrap();
    }
    let last = store.read("k").unwrap().unwrap();
    assert_eq!(last.frames[0], Bytes::from_static(b"by"));
    assert_eq!(store.keys().unwrap(), ["k"]);
}

#[test]
fn invalid_keys_are_refused_everywhere() {
    let (_scratch, store) = new_store();
    for key in [
        "",
        ".hidden",
        "..",
        "a//b",
        "/a",
        "a/",
        "../key",
        "a/.b",
        "a%b",
        "ü",
        &"x".repeat(201),
    ] {
        assert!(!valid_key(key), "{key:?}");
        let refused = |r: Result<(), StoreError>| matches!(r, Err(StoreError::InvalidKey(_)));
        assert!(refused(store.read(key).map(|_| ())), "read {key:?}");
        assert!(refused(store.write(key, &entry(&[]))), "write {key:?}");
        assert!(refused(store.remove(key).map(|_| ())), "remove {key:?}");
        assert!(
            refused(store.read_input(key).map(|_| ())),
            "read_input {key:?}"
        );
        assert!(
            refused(store.write_input(key, &input(&[], &[]))),
            "write_input {key:?}"
        );
        assert!(!store.has_input(key));
        assert!(
            refused(store.try_lock(key, "me").map(|_| ())),
            "try_lock {key:?}"
        );
        assert!(refused(store.unlock(key)), "unlock {key:?}");
        assert!(!store.contains(key));
        assert_eq!(store.lock_owner(key), None);
    }
    for key in ["a", "A.b-c_9", &"x".repeat(200), "a..b", "same/j1", "a/b/c"] {
        assert!(valid_key(key), "{key:?}");
    }
    let message = StoreError::InvalidKey("a//b".into()).to_string();
    assert!(
        message.contains("\"a//b\"") && message.contains("A-Z"),
        "{message}"
    );
}

#[test]
fn errors_name_the_file() {
    let (scratch, store) = new_store();
    let path = scratch.store_root().join("entries").join("k");
    fs::write(&path, b"junk").unwrap();
    let message = store.read("k").unwrap_err().to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("not unpickled"), "{message}");
}

#[test]
fn inputs_round_trip_large_frames_included() {
    let (_scratch, store) = new_store();
    let large: Vec<u8> = (0..(5 << 20) + 3).map(|i| (i * 5 % 251) as u8).collect();
    let written = input(&[b"args", b"", &large], &["a", "b.1", "a"]);
    assert!(!store.has_input("k"));
    store.write_input("k", &written).unwrap();
    assert!(store.has_input("k"));
    assert_eq!(store.read_input("k").unwrap(), Some(written));

    let bare = input(&[], &[]);
    store.write_input("bare", &bare).unwrap();
    assert_eq!(store.read_input("bare").unwrap(), Some(bare));
    assert_eq!(store.read_input("absent").unwrap(), None);
    // Inputs are not entries.
    assert_eq!(store.read("k").unwrap(), None);
    assert!(!store.contains("k"));
    assert_eq!(store.keys().unwrap(), Vec::<String>::new());
}

#[test]
fn a_changed_truncated_or_moved_input_is_invalid() {
    let (scratch, store) = new_store();
    store
        .write_input("k", &input(&[b"abc", b"de"], &["dep"]))
        .unwrap();
    let inputs = scratch.store_root().join("inputs");
    let path = inputs.join("k");
    let good = fs::read(&path).unwrap();
    for at in 0..good.len() {
        let mut bad = good.clone();
        bad[at] ^= 0x01;
        fs::write(&path, &bad).unwrap();
        assert_invalid_input(store.read_input("k"), &format!("byte {at} flipped"));
    }
    for len in 0..good.len() {
        fs::write(&path, &good[..len]).unwrap();
        assert_invalid_input(store.read_input("k"), &format!("truncated to {len} bytes"));
    }
    fs::write(&path, &good).unwrap();
    assert!(store.read_input("k").unwrap().is_some());
    fs::rename(&path, inputs.join("other")).unwrap();
    assert_invalid_input(store.read_input("other"), "k's input read as other");
}

#[test]
fn an_input_never_passes_as_an_entry_nor_an_entry_as_an_input() {
    let (scratch, store) = new_store();
    let root = scratch.store_root();
    store.write_input("k", &input(&[b"call"], &[])).unwrap();
    store.write("e", &entry(&[b"result"])).unwrap();
    let input_file = fs::read(root.join("inputs").join("k")).unwrap();
    let entry_file = fs::read(root.join("entries").join("e")).unwrap();

    fs::write(root.join("entries").join("k"), &input_file).unwrap();
    assert_invalid(store.read("k"), "an input in entries/");
    fs::write(root.join("inputs").join("e"), &entry_file).unwrap();
    assert_invalid_input(store.read_input("e"), "an entry in inputs/");

    // With the magic swapped too, the signature's label still tells them apart.
    let mut as_entry = input_file.clone();
    as_entry[..8].copy_from_slice(b"PMPENTRY");
    fs::write(root.join("entries").join("k"), &as_entry).unwrap();
    assert_invalid(store.read("k"), "an input relabelled as an entry");
    let mut as_input = entry_file.clone();
    as_input[..8].copy_from_slice(b"PMPINPUT");
    fs::write(root.join("inputs").join("e"), &as_input).unwrap();
    assert_invalid_input(store.read_input("e"), "an entry relabelled as an input");
}

#[test]
fn a_signed_input_without_a_function_pickle_is_invalid() {
    let (scratch, store) = new_store();
    let meta = bincode::serialize(&("module.g", 1.0f64, Vec::<String>::new())).unwrap();
    let mut file = Vec::new();
    signed::encode(
        &store.signer,
        &signed::INPUT,
        "k",
        Bytes::from(meta),
        &[],
        &mut file,
    )
    .unwrap();
    fs::write(scratch.store_root().join("inputs").join("k"), file).unwrap();
    assert_invalid_input(store.read_input("k"), "no function frame");
}

#[test]
fn an_input_written_before_resources_were_kept_still_reads() {
    let (scratch, store) = new_store();
    let meta = bincode::serialize(&("module.g", 1.0f64, vec!["up".to_string()])).unwrap();
    let mut file = Vec::new();
    let frames = [Bytes::from_static(b"cloudpickled g")];
    signed::encode(
        &store.signer,
        &signed::INPUT,
        "k",
        Bytes::from(meta),
        &frames,
        &mut file,
    )
    .unwrap();
    fs::write(scratch.store_root().join("inputs").join("k"), file).unwrap();
    let read = store.read_input("k").unwrap().unwrap();
    assert_eq!(
        (read.dependencies, read.resources),
        (vec!["up".into()], String::new())
    );
    // And one written now keeps them.
    store.write_input("n", &input(&[], &[])).unwrap();
    assert_eq!(
        store.read_input("n").unwrap().unwrap().resources,
        r#"{"cores": 2}"#
    );
}

#[test]
fn a_store_made_before_inputs_existed_still_reads() {
    let (scratch, store) = new_store();
    store.write("k", &entry(&[b"v"])).unwrap();
    drop(store);
    let root = scratch.store_root();
    fs::remove_dir(root.join("inputs")).unwrap();

    let store = Store::open(&root).unwrap();
    assert_eq!(store.read("k").unwrap(), Some(entry(&[b"v"])));
    assert_eq!(store.read_input("k").unwrap(), None);
    store.write_input("k", &input(&[], &[])).unwrap();
    assert!(store.has_input("k"));
}

#[test]
fn remove_and_clear_take_inputs_too() {
    let (scratch, store) = new_store();
    store.write("a", &entry(&[b"v"])).unwrap();
    store.write_input("a", &input(&[], &[])).unwrap();
    store.write_input("pending", &input(&[], &[])).unwrap();
    assert!(store.remove("a").unwrap());
    assert!(!store.has_input("a"));
    // An input alone is removed, but it is no entry.
    assert!(!store.remove("pending").unwrap());
    assert!(!store.has_input("pending"));

    store.write("b", &entry(&[b"v"])).unwrap();
    store.write_input("b", &input(&[], &[])).unwrap();
    store.write_input("c", &input(&[], &[])).unwrap();
    let stray = scratch
        .store_root()
        .join("inputs")
        .join(".tmp-00000000000000cc");
    fs::write(&stray, b"killed writer").unwrap();
    File::options()
        .write(true)
        .open(&stray)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(2 * 3600))
        .unwrap();
    assert_eq!(store.clear().unwrap(), 1);
    assert!(!store.has_input("b") && !store.has_input("c"));
    assert!(!stray.exists());
}

#[test]
fn keys_with_parts_are_stored_flat_and_listed_as_given() {
    let (_scratch, store) = new_store();
    store.write("same/j1", &entry(&[b"1"])).unwrap();
    store.write("same_j1", &entry(&[b"2"])).unwrap();
    assert_eq!(store.keys().unwrap(), ["same/j1", "same_j1"]);
    assert!(store.contains("same/j1"));
    assert!(store.root().join("entries").join("same%j1").is_file());
    assert!(store.try_lock("same/j1", "me").unwrap());
    assert_eq!(store.lock_owner("same/j1").as_deref(), Some("me"));
    store.unlock("same/j1").unwrap();
    assert!(store.remove("same/j1").unwrap());
    assert_eq!(store.keys().unwrap(), ["same_j1"]);
}

fn assert_not_private<T: std::fmt::Debug>(
    result: Result<T, StoreError>,
    expected: NotPrivate,
    what: &str,
) {
    match result {
        Err(ref e @ StoreError::NotPrivate { ref why, .. }) if *why == expected => {
            assert!(e.to_string().contains("yours alone"), "{what}: {e}")
        }
        other => panic!("{what}: expected NotPrivate {expected:?}, got {other:?}"),
    }
}

#[test]
fn a_store_directory_others_can_write_to_is_refused_before_anything_is_read() {
    let scratch = Scratch::new();
    let root = scratch.store_root();
    fs::create_dir_all(&root).unwrap();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o777)).unwrap();
    assert_not_private(
        Store::open(&root),
        NotPrivate::Writable { mode: 0o777 },
        "a 0777 store",
    );
    // Refused before the format or key file was made in it.
    assert!(!root.join("key").exists() && !root.join("format").exists());
    let message = Store::open(&root).unwrap_err().to_string();
    assert!(message.contains("chmod go-w"), "{message}");
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
    let store = Store::open(&root).unwrap();
    // A subdirectory too: the group may not write to entries/.
    fs::set_permissions(&store.entries, fs::Permissions::from_mode(0o770)).unwrap();
    assert_not_private(
        Store::open(&root),
        NotPrivate::Writable { mode: 0o770 },
        "a group-writable entries/",
    );
}

#[test]
fn a_linked_subdirectory_or_entry_is_refused() {
    let (scratch, store) = new_store();
    store.write("k", &entry(&[b"result"])).unwrap();
    // An entry file replaced by a link to a valid entry: not followed.
    let elsewhere = scratch.0.join("elsewhere");
    fs::rename(store.entries.join("k"), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, store.entries.join("k")).unwrap();
    assert_not_private(store.read("k"), NotPrivate::Symlink, "a linked entry");
    // A FIFO under an entry's name is neither read nor waited on.
    let fifo = std::ffi::CString::new(store.entries.join("f").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    assert_not_private(store.read("f"), NotPrivate::NotFile, "a FIFO entry");
    // logs/ replaced by a link to a directory elsewhere.
    let root = store.root().to_path_buf();
    drop(store);
    let logs = root.join("logs");
    fs::remove_dir(&logs).unwrap();
    std::os::unix::fs::symlink(&scratch.0, &logs).unwrap();
    assert_not_private(Store::open(&root), NotPrivate::Symlink, "a linked logs/");
}

#[test]
fn a_store_given_as_a_link_is_the_directory_it_points_to() {
    let (scratch, store) = new_store();
    store.write("k", &entry(&[b"result"])).unwrap();
    let link = scratch.0.join("link");
    std::os::unix::fs::symlink(store.root(), &link).unwrap();
    let through_link = Store::open(&link).unwrap();
    assert_eq!(through_link.root(), fs::canonicalize(store.root()).unwrap());
    assert_eq!(through_link.read("k").unwrap(), Some(entry(&[b"result"])));
}

#[test]
fn a_file_of_another_kind_is_rejected_by_its_first_bytes() {
    let (_scratch, store) = new_store();
    // Large and sparse: were it read whole, this test would allocate 1 GiB.
    let file = File::create(store.entries.join("big")).unwrap();
    file.set_len(1 << 30).unwrap();
    match store.read("big") {
        Err(StoreError::Invalid { why, .. }) => assert!(why.contains("PMPENTRY"), "{why}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    // An input is not an entry, even with a valid signature.
    store.write_input("i", &input(&[b"call"], &[])).unwrap();
    fs::copy(store.inputs.join("i"), store.entries.join("i")).unwrap();
    assert_invalid(store.read("i"), "an input as an entry");
}

#[test]
fn job_records_are_signed_and_hold_only_job_ids() {
    let (_scratch, store) = new_store();
    for job in ["4242", "ƒ2Kp8q3dZ", "f2Kp8q3dZ"] {
        store.write_job("k", job).unwrap();
        assert_eq!(store.read_job("k").unwrap().as_deref(), Some(job));
    }
    for bad in ["--name=canary", "12 13", "", "12\n", "ƒ0OIl", "-1", "f"] {
        assert!(
            matches!(store.write_job("k", bad), Err(StoreError::InvalidJobId(_))),
            "{bad:?} was accepted as a job id"
        );
    }
    assert_eq!(store.read_job("none").unwrap(), None);
    assert_eq!(store.job_keys().unwrap(), vec!["k".to_string()]);
    // A record rewritten as text, as an attacker with write access would.
    fs::write(store.jobs.join("k"), "--name=canary").unwrap();
    assert!(matches!(
        store.read_job("k"),
        Err(StoreError::Invalid { .. })
    ));
    // A record copied under another key fails its signature.
    store.write_job("a", "7").unwrap();
    fs::copy(store.jobs.join("a"), store.jobs.join("b")).unwrap();
    assert!(matches!(
        store.read_job("b"),
        Err(StoreError::Invalid { .. })
    ));
}

#[test]
fn a_logs_tail_is_its_last_bytes() {
    let (_scratch, store) = new_store();
    assert_eq!(store.log_tail("k", 10).unwrap(), None);
    fs::write(store.log_path("k").unwrap(), "line one\nline two\n").unwrap();
    assert_eq!(store.log_tail("k", 9).unwrap().unwrap(), b"line two\n");
    assert_eq!(
        store.log_tail("k", 1000).unwrap().unwrap(),
        b"line one\nline two\n"
    );
}

#[test]
fn a_log_is_read_from_where_it_was_last_read_keeping_at_most_the_limit() {
    let (_scratch, store) = new_store();
    assert_eq!(store.log_from("k", 0, 10).unwrap(), None);
    let path = store.log_path("k").unwrap();
    fs::write(&path, "one\n").unwrap();
    assert_eq!(
        store.log_from("k", 0, 10).unwrap().unwrap(),
        (0, b"one\n".to_vec())
    );
    // Nothing new: nothing read.
    assert_eq!(
        store.log_from("k", 4, 10).unwrap().unwrap(),
        (4, Vec::new())
    );
    // It grew by more than the limit: the last `limit` bytes, and where they start.
    fs::write(&path, "one\ntwo\nthree\nfour\n").unwrap();
    assert_eq!(
        store.log_from("k", 4, 5).unwrap().unwrap(),
        (14, b"four\n".to_vec())
    );
    // Shorter than what was read: a new job wrote it again, read from its start.
    fs::write(&path, "new\n").unwrap();
    assert_eq!(
        store.log_from("k", 19, 10).unwrap().unwrap(),
        (0, b"new\n".to_vec())
    );
}

#[test]
fn failed_upstream_finds_the_failure_at_the_head_of_a_chain() {
    let (_scratch, store) = new_store();
    let mut failed = entry(&[b"KeyError"]);
    failed.meta.state = State::Failed;
    store.write("head", &failed).unwrap();
    // head <- middle <- tail: neither dependent ran, so only inputs name the chain.
    store
        .write_input("middle", &input(&[b"c"], &["head"]))
        .unwrap();
    store
        .write_input("tail", &input(&[b"c"], &["other", "middle"]))
        .unwrap();
    store.write("other", &entry(&[b"fine"])).unwrap();
    let found = store.failed_upstream(&["tail".to_string()]).unwrap();
    assert_eq!(found, Some(("head".to_string(), failed)));
    assert_eq!(store.failed_upstream(&["other".to_string()]).unwrap(), None);
    // A cycle of inputs (only a forged store could hold one) ends the walk.
    store.write_input("x", &input(&[b"c"], &["y"])).unwrap();
    store.write_input("y", &input(&[b"c"], &["x"])).unwrap();
    assert_eq!(store.failed_upstream(&["x".to_string()]).unwrap(), None);
}
