//! Files that appear whole or not at all, on local and network file systems
//! alike: each is written to a temp file of its own first, then renamed or
//! hard-linked into place, both of which are atomic on POSIX file systems and
//! on NFS.

use super::error::{io, StoreError};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Temp files start with a dot, so no temp file is ever a valid task key.
pub(super) const TEMP_PREFIX: &str = ".tmp-";

/// A temp file no writer has modified for this long is stray (its writer was
/// killed) rather than being written. Generous: a writer of a large result
/// on a slow network file system can spend minutes in its fsync.
const STRAY_AFTER: Duration = Duration::from_secs(3600);

/// A new temp file in `dir`, named at random and created with `create_new`,
/// so no other writer has it open.
fn temp_file(dir: &Path) -> Result<(PathBuf, File), StoreError> {
    loop {
        let path = dir.join(format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(&path)(e)),
        }
    }
}

/// A temp file in `dir` holding what `fill` wrote, on disk when `durable`.
/// The file is removed again if anything fails.
fn written_temp(
    dir: &Path,
    durable: bool,
    fill: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<PathBuf, StoreError> {
    let (path, file) = temp_file(dir)?;
    let written = (|| {
        let mut out = BufWriter::with_capacity(1 << 16, file);
        fill(&mut out)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        if durable {
            file.sync_all()?;
        }
        Ok(())
    })();
    match written {
        Ok(()) => Ok(path),
        Err(e) => {
            let _ = fs::remove_file(&path);
            Err(io(&path)(e))
        }
    }
}

/// Replace `target` (in `dir`) with what `fill` writes: readers see the old
/// file or the new one, never a torn one, whenever the writer is killed.
///
/// Not fsynced: that took milliseconds a task on this project's machines, in
/// every worker. What fsync would add is the case of the machine itself
/// going down between the rename and the write-back, which can leave the new
/// name on a short file; such a file fails its signature check, so it reads
/// as absent and the call runs again. (Network file systems write back at
/// close anyway, for close-to-open consistency.)
pub(super) fn replace(
    dir: &Path,
    target: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<(), StoreError> {
    let temp = written_temp(dir, false, fill)?;
    fs::rename(&temp, target).map_err(|e| {
        let _ = fs::remove_file(&temp);
        io(target)(e)
    })
}

/// Create `dir/name` holding `content` unless it exists: Ok(false) then. Of
/// processes creating it at once, exactly one succeeds, and no reader ever
/// sees it half written: it is a hard link to a complete temp file, where
/// `create_new` and then a write would show an empty file meanwhile.
pub(super) fn create_whole(
    dir: &Path,
    name: &str,
    content: &[u8],
    durable: bool,
) -> Result<bool, StoreError> {
    let temp = written_temp(dir, durable, |out| out.write_all(content))?;
    let target = dir.join(name);
    let outcome = match fs::hard_link(&temp, &target) {
        Ok(()) => Ok(true),
        // Over NFS, a link whose reply was lost is sent again and then fails
        // with EEXIST although it was made: the temp file's link count tells.
        Err(_) if fs::metadata(&temp).is_ok_and(|m| m.nlink() == 2) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io(&target)(e)),
    };
    let _ = fs::remove_file(&temp);
    outcome
}

/// Whether `name` in `dir` is a temp file left by a killed writer.
pub(super) fn is_stray_temp(dir: &Path, name: &str) -> bool {
    name.starts_with(TEMP_PREFIX)
        && fs::symlink_metadata(dir.join(name))
            .and_then(|m| m.modified())
            .is_ok_and(|modified| {
                SystemTime::now()
                    .duration_since(modified)
                    .is_ok_and(|age| age >= STRAY_AFTER)
            })
}

/// The names of the files in `dir` (those that are not UTF-8 cannot be ours).
pub(super) fn names(dir: &Path) -> Result<Vec<String>, StoreError> {
    let mut names = Vec::new();
    for item in fs::read_dir(dir).map_err(io(dir))? {
        if let Ok(name) = item.map_err(io(dir))?.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

/// Remove `path`; Ok(false) if it was not there.
pub(super) fn remove(path: &Path) -> Result<bool, StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io(path)(e)),
    }
}
