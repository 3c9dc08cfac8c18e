//! Reloading a file when it changes: one polling thread per watched file, shared by the
//! revocation file and the principal allowlist (and, in the gateway binary, the upstream
//! credential file).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

/// A version of a file, as [`stamp`] sees it.
pub type Stamp = (SystemTime, u64, [i64; 4]);

/// What identifies a version of a file: its modification time and size, and on Unix
/// its device, inode and change time, so that a file renamed over it (which may carry
/// the same modification time and size, as `cp -p`, `touch -r` or an unpacked image
/// leave it) is seen; the change time cannot be set from user space.
#[cfg(unix)]
pub fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    let identity = [
        i64::try_from(m.dev()).unwrap_or(i64::MAX),
        i64::try_from(m.ino()).unwrap_or(i64::MAX),
        m.ctime(),
        m.ctime_nsec(),
    ];
    Some((m.modified().ok()?, m.len(), identity))
}

#[cfg(not(unix))]
/// What identifies a version of a file: its modification time and size.
pub fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), [0; 4]))
}

/// Checks `path` every `interval` on a thread named `name` and calls `reload` with the
/// owner and the path whenever the file's modification time or size changed. The thread
/// ends once the owner is dropped. Errors only when the thread cannot be started.
pub fn watch_file<T, F>(
    name: &str,
    owner: &Arc<T>,
    path: PathBuf,
    interval: Duration,
    mut reload: F,
) -> std::io::Result<()>
where
    T: Send + Sync + 'static,
    F: FnMut(&T, &Path) + Send + 'static,
{
    let owner: Weak<T> = Arc::downgrade(owner);
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let mut seen = stamp(&path);
            loop {
                std::thread::sleep(interval);
                let Some(owner) = owner.upgrade() else { return };
                let now = stamp(&path);
                if now != seen {
                    seen = now;
                    reload(&owner, &path);
                }
            }
        })
        .map(|_| ())
}
