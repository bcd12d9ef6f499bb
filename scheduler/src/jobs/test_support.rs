//! What the jobs module's tests share: a real store in a scratch directory
//! and entries to put in it.

use crate::store::{Entry, Meta, State, Store};
use bytes::Bytes;
use std::path::PathBuf;

pub struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn new_store() -> (Scratch, Store) {
    let dir = std::env::temp_dir().join(format!(
        "pmp-jobs-test-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let store = Store::open(&dir.join("store")).unwrap();
    (Scratch(dir), store)
}

pub fn entry(state: State) -> Entry {
    Entry {
        meta: Meta {
            function: "f".into(),
            state,
            submitted: 1.0,
            started: 2.0,
            finished: 3.0,
            host: "node1".into(),
            pid: 7,
        },
        frames: vec![Bytes::from_static(b"result")],
    }
}
