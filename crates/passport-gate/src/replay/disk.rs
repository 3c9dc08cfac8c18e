//! The replay store on local disk (the `disk` feature): a single gateway keeps its
//! records across a restart and a crash, without Redis.
//!
//! Decisions are made in memory, by the same index as the in-process store (loaded from
//! disk at startup), and every new record is written to a [redb] database before the
//! request is accepted. One thread commits: every record that arrived while the previous
//! commit ran goes into the next one, with one fsync for all of them (group commit), so
//! concurrent requests share an fsync and none waits for more than two commits. A
//! request is forwarded only after its record is durable, so a crash, a SIGKILL or a
//! power loss included, loses no record of a forwarded request. Releases and the
//! deletion of expired records ride in the same commits without anyone waiting for them:
//! a release lost in a crash keeps its record, so the request stays refused, never
//! accepted twice.
//!
//! Expired records are deleted from disk once a second (a table ordered by deadline
//! finds them without a scan); redb reuses the freed pages, so the file stays within
//! the largest number of live records it held.

use super::{
    effective_quota, Index, ReleaseFuture, ReplayError, ReplayFuture, ReplayRecord, ReplayStore,
    ReplayVerdict,
};
use passport_core::time::Timestamp;
use redb::{Database, ReadableTable, TableDefinition};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The record of a request: its 32-byte key to its deadline (unix seconds, 8 bytes
/// big-endian) followed by its principal's address in UTF-8.
const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("replay_records");
/// The same records ordered by deadline: the deadline (8 bytes, ordered as unsigned)
/// followed by the key, to nothing.
const DEADLINES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("replay_deadlines");

/// The database file inside the data directory.
pub const FILE_NAME: &str = "replay.redb";

/// How often expired records are deleted from disk.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Operations in one commit, at most (a commit's time stays bounded under a burst).
const MAX_BATCH: usize = 4096;
/// Expired records deleted by one sweep, at most.
const MAX_SWEEP: usize = 10_000;

/// Why the disk store could not be opened. Each names the file or directory.
#[derive(Debug)]
pub enum DiskStoreError {
    /// The data directory does not exist or is not a directory; it is never created,
    /// so a mistyped or unmounted path cannot start an empty store.
    NotADirectory {
        /// The configured directory.
        path: PathBuf,
    },
    /// redb refused to open or create the database: not a redb file, a damaged one,
    /// one another process holds open, or one this user may not write.
    Open {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        source: Box<redb::DatabaseError>,
    },
    /// Reading the records at startup failed.
    Read {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        source: Box<redb::Error>,
    },
    /// A stored record does not decode.
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What does not decode.
        detail: &'static str,
    },
    /// The thread that commits could not be started.
    Thread(std::io::Error),
}

impl fmt::Display for DiskStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskStoreError::NotADirectory { path } => write!(
                f,
                "{}: not an existing directory (create it; it is never created for you)",
                path.display()
            ),
            DiskStoreError::Open { path, source } => {
                write!(
                    f,
                    "{}: cannot open the replay database: {source}",
                    path.display()
                )
            }
            DiskStoreError::Read { path, source } => {
                write!(
                    f,
                    "{}: cannot read the replay records: {source}",
                    path.display()
                )
            }
            DiskStoreError::Corrupt { path, detail } => {
                write!(f, "{}: corrupt replay record: {detail}", path.display())
            }
            DiskStoreError::Thread(e) => write!(f, "cannot start the replay writer thread: {e}"),
        }
    }
}

impl std::error::Error for DiskStoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DiskStoreError::Open { source, .. } => Some(source.as_ref()),
            DiskStoreError::Read { source, .. } => Some(source.as_ref()),
            DiskStoreError::Thread(e) => Some(e),
            DiskStoreError::NotADirectory { .. } | DiskStoreError::Corrupt { .. } => None,
        }
    }
}

/// What the writer thread is asked to do.
enum Op {
    /// Write a record, then say whether it is durable.
    Record {
        key: [u8; 32],
        until: i64,
        principal: String,
        done: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
    /// Delete a released record (nobody waits).
    Release { key: [u8; 32] },
}

/// Replay records in memory and in a redb file in a data directory, for one gateway
/// (redb locks the file: a second process on the same directory is refused). Bounded
/// like the in-process store: `capacity` live records, a per-principal quota of at most
/// a tenth of it.
pub struct DiskReplayStore {
    capacity: usize,
    per_principal: u64,
    index: Mutex<Index>,
    ops: crossbeam_channel::Sender<Op>,
    path: PathBuf,
}

impl fmt::Debug for DiskReplayStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskReplayStore")
            .field("path", &self.path)
            .field("capacity", &self.capacity)
            .field("per_principal", &self.per_principal)
            .finish_non_exhaustive()
    }
}

/// The deadline of a record on disk: whole seconds, rounded up (a record lives at most
/// a second longer, never shorter).
fn deadline_seconds(t: Timestamp) -> i64 {
    let s = t.unix_seconds();
    if Timestamp::from_unix_seconds(s) == t {
        s
    } else {
        s.saturating_add(1)
    }
}

/// The key of `DEADLINES`: the deadline with its sign bit flipped (so that byte order
/// is time order), then the record key.
fn deadline_key(until: i64, key: &[u8; 32]) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..8].copy_from_slice(&((until as u64) ^ (1 << 63)).to_be_bytes());
    k[8..].copy_from_slice(key);
    k
}

fn record_value(until: i64, principal: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + principal.len());
    v.extend_from_slice(&until.to_be_bytes());
    v.extend_from_slice(principal.as_bytes());
    v
}

fn record_until(value: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(value.get(..8)?.try_into().ok()?))
}

impl DiskReplayStore {
    /// Opens (or, in an existing directory, creates) `dir/replay.redb` and loads its
    /// live records at `now`. At most `capacity` live records are accepted (records
    /// loaded from disk are all kept, even beyond it), at most `per_principal` of them
    /// for one principal and never more than a tenth of the capacity.
    pub fn open(
        dir: &Path,
        capacity: usize,
        per_principal: u64,
        now: Timestamp,
    ) -> Result<DiskReplayStore, DiskStoreError> {
        if !dir.is_dir() {
            return Err(DiskStoreError::NotADirectory {
                path: dir.to_owned(),
            });
        }
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|source| DiskStoreError::Open {
            path: path.clone(),
            source: Box::new(source),
        })?;
        let index = load(&db, now.unix_seconds()).map_err(|e| match e {
            LoadError::Redb(source) => DiskStoreError::Read {
                path: path.clone(),
                source,
            },
            LoadError::Corrupt(detail) => DiskStoreError::Corrupt {
                path: path.clone(),
                detail,
            },
        })?;
        let (ops, queue) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("replay-disk".into())
            .spawn(move || write_loop(db, queue))
            .map_err(DiskStoreError::Thread)?;
        Ok(DiskReplayStore {
            capacity,
            per_principal: effective_quota(capacity, per_principal),
            index: Mutex::new(index),
            ops,
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The quota each principal gets in this store.
    pub fn records_per_principal(&self) -> u64 {
        self.per_principal
    }

    /// Live records held (after purging those expired at `now`).
    pub fn len(&self, now: Timestamp) -> usize {
        match self.index.lock() {
            Ok(mut r) => r.live_at(now),
            Err(_) => 0,
        }
    }

    /// Whether no live record is held at `now`.
    pub fn is_empty(&self, now: Timestamp) -> bool {
        self.len(now) == 0
    }

    fn unavailable(&self, e: &str) -> ReplayError {
        ReplayError::Unavailable(format!("{}: {e}", self.path.display()))
    }
}

enum LoadError {
    Redb(Box<redb::Error>),
    Corrupt(&'static str),
}

impl<E: Into<redb::Error>> From<E> for LoadError {
    fn from(e: E) -> Self {
        LoadError::Redb(Box::new(e.into()))
    }
}

/// Creates the tables if the file is new and reads every record live at `now` (unix
/// seconds) into an index.
fn load(db: &Database, now: i64) -> Result<Index, LoadError> {
    let txn = db.begin_write()?;
    txn.open_table(RECORDS)?;
    txn.open_table(DEADLINES)?;
    txn.commit()?;
    let txn = db.begin_read()?;
    let records = txn.open_table(RECORDS)?;
    let mut index = Index::new();
    for entry in records.iter()? {
        let (key, value) = entry?;
        let key: [u8; 32] = key
            .value()
            .try_into()
            .map_err(|_| LoadError::Corrupt("a key is not 32 bytes"))?;
        let value = value.value();
        let until = record_until(value).ok_or(LoadError::Corrupt("a value is under 8 bytes"))?;
        let principal = std::str::from_utf8(&value[8..])
            .map_err(|_| LoadError::Corrupt("a principal is not UTF-8"))?;
        if until > now {
            index.insert(key, Timestamp::from_unix_seconds(until), principal);
        }
    }
    Ok(index)
}

/// The writer thread: commits every operation waiting, one transaction (one fsync) at a
/// time, and deletes expired records once a second. Ends when the store is dropped.
fn write_loop(db: Database, queue: crossbeam_channel::Receiver<Op>) {
    let mut swept = Instant::now();
    loop {
        let mut batch = Vec::new();
        match queue.recv_timeout(SWEEP_EVERY) {
            Ok(op) => batch.push(op),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        }
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let sweep = swept.elapsed() >= SWEEP_EVERY;
        if batch.is_empty() && !sweep {
            continue;
        }
        let now = sweep.then(|| Timestamp::now().unix_seconds());
        let result = commit(&db, &batch, now).map_err(|e| e.to_string());
        if sweep {
            swept = Instant::now();
        }
        if let Err(e) = &result {
            tracing::error!(error = %e, "replay store: commit failed; its requests are refused");
        }
        for op in batch {
            if let Op::Record { done, .. } = op {
                let _ = done.send(result.clone());
            }
        }
    }
}

/// One durable transaction: the batch's writes and deletions, and with `sweep_at` the
/// deletion of records whose deadline passed by then.
// redb's own error type, large; returned at most once per commit, never per request.
#[allow(clippy::result_large_err)]
fn commit(db: &Database, batch: &[Op], sweep_at: Option<i64>) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut records = txn.open_table(RECORDS)?;
        let mut deadlines = txn.open_table(DEADLINES)?;
        for op in batch {
            let (key, replaced) = match op {
                Op::Record {
                    key,
                    until,
                    principal,
                    ..
                } => {
                    let old = records
                        .insert(&key[..], &record_value(*until, principal)[..])?
                        .and_then(|v| record_until(v.value()));
                    deadlines.insert(&deadline_key(*until, key)[..], &[][..])?;
                    (key, old.filter(|old| old != until))
                }
                Op::Release { key } => (
                    key,
                    records
                        .remove(&key[..])?
                        .and_then(|v| record_until(v.value())),
                ),
            };
            if let Some(old) = replaced {
                deadlines.remove(&deadline_key(old, key)[..])?;
            }
        }
        if let Some(now) = sweep_at {
            let upto = deadline_key(now, &[0xff; 32]);
            let expired = deadlines
                .range::<&[u8]>(..=&upto[..])?
                .take(MAX_SWEEP)
                .map(|e| e.map(|(k, _)| k.value().to_vec()))
                .collect::<Result<Vec<_>, _>>()?;
            for k in expired {
                deadlines.remove(&k[..])?;
                records.remove(&k[8..])?;
            }
        }
    }
    txn.commit()?;
    Ok(())
}

impl ReplayStore for DiskReplayStore {
    fn check_and_record<'a>(&'a self, record: ReplayRecord<'a>) -> ReplayFuture<'a> {
        Box::pin(async move {
            let until = deadline_seconds(record.until);
            let rounded = ReplayRecord {
                until: Timestamp::from_unix_seconds(until),
                ..record
            };
            let verdict = self
                .index
                .lock()
                .map_err(|_| self.unavailable("replay store lock poisoned"))?
                .decide(&rounded, self.capacity, self.per_principal)?;
            if verdict == ReplayVerdict::Replayed {
                return Ok(verdict);
            }
            let (done, durable) = tokio::sync::oneshot::channel();
            let written = match self.ops.send(Op::Record {
                key: *record.key,
                until,
                principal: record.principal.to_owned(),
                done,
            }) {
                Ok(()) => durable
                    .await
                    .unwrap_or_else(|_| Err("the writer thread stopped".into())),
                Err(_) => Err("the writer thread stopped".into()),
            };
            match written {
                Ok(()) => Ok(ReplayVerdict::Fresh),
                // Not durable, so not accepted: the record goes, and the request is
                // refused as the store being unavailable.
                Err(e) => {
                    if let Ok(mut index) = self.index.lock() {
                        index.forget(record.key);
                    }
                    Err(self.unavailable(&e))
                }
            }
        })
    }

    fn release<'a>(&'a self, key: &'a [u8; 32], _principal: &'a str) -> ReleaseFuture<'a> {
        let released = self
            .index
            .lock()
            .map_err(|_| self.unavailable("replay store lock poisoned"))
            .and_then(|mut index| {
                index.release(key);
                self.ops
                    .send(Op::Release { key: *key })
                    .map_err(|_| self.unavailable("the writer thread stopped"))
            });
        Box::pin(std::future::ready(released))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_unix_seconds(1_779_364_800);

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pg-disk-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn check(s: &DiskReplayStore, key: u8, now: Timestamp) -> Result<ReplayVerdict, ReplayError> {
        block_on(s.check_and_record(ReplayRecord {
            key: &[key; 32],
            principal: "gonka1alice",
            now,
            until: T0.plus_seconds(60),
        }))
    }

    /// Opens the store again once the writer thread of the dropped one has let the file
    /// go (redb refuses a file another handle holds open).
    fn reopen(d: &Path, now: Timestamp) -> DiskReplayStore {
        for _ in 0..250 {
            match DiskReplayStore::open(d, 100, 10, now) {
                Ok(s) => return s,
                Err(DiskStoreError::Open { .. }) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("{e}"),
            }
        }
        panic!("the file stayed held for 5 s");
    }

    #[test]
    fn records_survive_reopening_and_expired_ones_are_not_loaded() {
        let d = dir("reopen");
        let s = DiskReplayStore::open(&d, 100, 10, T0).unwrap();
        assert_eq!(check(&s, 1, T0), Ok(ReplayVerdict::Fresh));
        assert_eq!(check(&s, 2, T0), Ok(ReplayVerdict::Fresh));
        block_on(s.release(&[2; 32], "gonka1alice")).unwrap();
        drop(s);
        let s = reopen(&d, T0);
        assert_eq!(check(&s, 1, T0), Ok(ReplayVerdict::Replayed));
        assert_eq!(check(&s, 2, T0), Ok(ReplayVerdict::Fresh));
        drop(s);
        let later = T0.plus_seconds(61);
        let s = reopen(&d, later);
        assert!(s.is_empty(later));
    }

    #[test]
    fn a_missing_directory_or_a_file_that_is_not_a_database_is_an_error_naming_it() {
        let d = dir("corrupt");
        let missing = d.join("absent");
        let e = DiskReplayStore::open(&missing, 100, 10, T0).unwrap_err();
        assert!(e.to_string().contains(&*missing.to_string_lossy()), "{e}");
        std::fs::write(d.join(FILE_NAME), vec![0x5a; 8192]).unwrap();
        let e = DiskReplayStore::open(&d, 100, 10, T0).unwrap_err();
        assert!(matches!(e, DiskStoreError::Open { .. }), "{e}");
        assert!(e.to_string().contains(FILE_NAME), "{e}");
        // Never replaced.
        assert_eq!(std::fs::read(d.join(FILE_NAME)).unwrap(), vec![0x5a; 8192]);
    }

    #[test]
    fn deadlines_round_up_to_whole_seconds_and_order_as_bytes() {
        assert_eq!(deadline_seconds(T0), T0.unix_seconds());
        let t = Timestamp::parse("2026-05-21T12:00:00.5Z").unwrap();
        assert_eq!(deadline_seconds(t), t.unix_seconds() + 1);
        assert!(deadline_key(-5, &[0; 32]) < deadline_key(3, &[0; 32]));
        assert!(deadline_key(3, &[0xff; 32]) < deadline_key(4, &[0; 32]));
    }
}
