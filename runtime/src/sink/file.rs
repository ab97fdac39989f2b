//! The file sink: JSON Lines files (one object per change, see [`super::json`]) in a directory,
//! rotated like pg_flo's.
//!
//! Place in the pipeline: NATS message -> decode -> rules -> routing -> **file**.
//!
//! Files are named `pg_flo_log_<UTC yyyyMMddTHHmmssZ>.jsonl` (for example
//! `pg_flo_log_20240320T100000Z.jsonl`), opened with append + create and mode 0600; the directory
//! is created with mode 0750 (both before the umask). Before each line is written the sink
//! rotates to a new file if the current one has had 100 MiB written to it or was opened an hour
//! ago or more; a rotation within the same second appends to the same file, as in pg_flo.
//!
//! Delivery: effectively-once except in the narrow windows below. [`Sink::apply`] renders into a
//! buffer; [`Sink::commit`] writes the buffer, then `fdatasync`s the file (and the directory
//! after creating a file), so every acked change survives a crash, then stores the position in
//! [`POSITION_FILE`]; [`Sink::rollback`] drops the lines not yet written and cuts the current
//! file back to its length at the last commit. A transaction bigger than [`SPILL_BYTES`] is
//! written (not synced) before its commit to bound memory.
//!
//! Stored position ([`POSITION_FILE`] in the output directory, JSON: group, commit LSN and seq
//! of the last committed message, the log file written last and its length at that commit):
//! - written after the data's `fdatasync`, atomically (temp file, `fsync`, rename, `fsync` of
//!   the directory), so it never names data that is not durable;
//! - read at start: [`Sink::applied_position`] reports it, and the worker skips redelivered
//!   messages at or below it (duplicates after a restart);
//! - one directory per group: a position file of another group makes the sink refuse to
//!   start (two groups in one directory would cut each other's files).
//!
//! Whole lines only: at start, the log file named in the position file is cut back to its
//! length at the last commit (lines written after it, by a spill or a commit that crashed
//! before storing its position, are redelivered by NATS and written again), and the newest log
//! file is cut back to its last `\n` (a line cut short by a crash or a full disk). After a failed
//! write the file is cut back the same way before anything else is written to it.
//!
//! At-least-once windows: a rotation between the last commit and a crash or failure leaves the
//! whole lines of the older file in place, and they are written again.
//!
//! Differences from pg_flo: the first file is opened at the first write, not at start-up (no
//! empty files from idle workers); pg_flo never synced, so acked lines could be lost in a crash;
//! pg_flo had no stored position, so a restart wrote redelivered changes twice.

use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::fs::File;
use tokio::io::AsyncWriteExt as _;

use crate::lsn::Lsn;
use crate::message::{ChangeBatch, Position};
use crate::sink::lines::Lines;
use crate::sink::{Sink, SinkError};

#[cfg(doc)]
use crate::sink::lines::SPILL_BYTES;

/// A file is rotated once this many bytes were written to it.
pub const MAX_FILE_BYTES: u64 = 100 << 20;
/// A file is rotated once it was opened this long ago.
pub const MAX_FILE_AGE: Duration = Duration::from_secs(3600);
/// The file in the output directory that holds the last committed position.
pub const POSITION_FILE: &str = "pg_flo_position";

/// Writes changes as JSON Lines into rotated files in one directory.
pub struct FileSink {
    dir: PathBuf,
    group: String,
    /// The last committed position (read from [`POSITION_FILE`] at start).
    applied: Option<Position>,
    /// The file written last and its length at the last commit.
    committed_file: Option<(String, u64)>,
    /// A file a failed write left longer than this length: cut it back before the next write.
    damaged: Option<(PathBuf, u64)>,
    max_bytes: u64,
    max_age: Duration,
    /// Wall clock for file names (replaced in tests).
    clock: Box<dyn FnMut() -> DateTime<Utc> + Send>,
    /// Boxed: a tokio `File` is large and `AnySink` holds this sink inline.
    current: Option<Box<OpenFile>>,
    lines: Lines,
}

struct OpenFile {
    file: File,
    path: PathBuf,
    /// The file's length (it holds whole lines only).
    len: u64,
    /// Its length at the last commit, or when it was opened: what a rollback keeps.
    kept_len: u64,
    /// Bytes written through this handle (pg_flo's `currentSize`, reset on every rotation).
    written: u64,
    opened: Instant,
    /// Written since the last `fdatasync`.
    dirty: bool,
}

impl FileSink {
    /// Creates `output_dir` (and its parents) if needed, with pg_flo's rotation limits; reads
    /// the position `group` stored there and cuts the log files back to whole, committed lines
    /// (see the module docs).
    pub fn new(output_dir: PathBuf, group: &str) -> Result<FileSink, SinkError> {
        Self::with_rotation(output_dir, group, MAX_FILE_BYTES, MAX_FILE_AGE)
    }

    /// As [`FileSink::new`], rotating after `max_bytes` written or `max_age` open.
    pub fn with_rotation(
        output_dir: PathBuf,
        group: &str,
        max_bytes: u64,
        max_age: Duration,
    ) -> Result<FileSink, SinkError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(&output_dir)
            .map_err(|source| io_error("creating output directory", &output_dir, source))?;
        let stored = read_position(&output_dir, group)?;
        recover(&output_dir, stored.as_ref())?;
        Ok(FileSink {
            applied: stored.as_ref().map(|s| s.position),
            committed_file: stored.and_then(|s| s.file.map(|f| (f, s.offset))),
            damaged: None,
            group: group.to_owned(),
            dir: output_dir,
            max_bytes,
            max_age,
            clock: Box::new(Utc::now),
            current: None,
            lines: Lines::new(),
        })
    }

    /// Writes the buffered lines, rotating before any line as pg_flo does. Written or not, those
    /// lines are done afterwards: on failure the worker rolls back and redelivers. After a
    /// failure the file is reopened on the next write.
    async fn write_out(&mut self) -> Result<(), SinkError> {
        let buffer = self.lines.take();
        let result = self.write_lines(&buffer).await;
        if result.is_err() {
            self.drop_current();
        }
        self.lines.reuse(buffer);
        result
    }

    async fn write_lines(&mut self, mut rest: &[u8]) -> Result<(), SinkError> {
        while !rest.is_empty() {
            let due = self.current.as_ref().is_none_or(|f| self.rotation_due(f));
            if due {
                self.rotate().await?;
            }
            let Some(current) = self.current.as_mut() else {
                return Err(SinkError::Invalid("file sink has no open file".into()));
            };
            // The run of lines up to the next rotation, written at once.
            let mut end = 0;
            let mut written = current.written;
            loop {
                let line_end = rest[end..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(rest.len(), |i| end + i + 1);
                written += (line_end - end) as u64;
                end = line_end;
                if end == rest.len()
                    || written >= self.max_bytes
                    || current.opened.elapsed() >= self.max_age
                {
                    break;
                }
            }
            current.dirty = true;
            let write = async {
                current.file.write_all(&rest[..end]).await?;
                // Waits for tokio's background write, so its error surfaces here.
                current.file.flush().await
            };
            write
                .await
                .map_err(|source| io_error("writing", &current.path, source))?;
            current.len += end as u64;
            current.written = written;
            rest = &rest[end..];
        }
        Ok(())
    }

    fn rotation_due(&self, file: &OpenFile) -> bool {
        file.written >= self.max_bytes || file.opened.elapsed() >= self.max_age
    }

    /// Closes the current file after a failure; the lines written to it since the last commit
    /// (or since it was opened) are cut before the next write.
    fn drop_current(&mut self) {
        if let Some(old) = self.current.take() {
            if old.len > old.kept_len {
                self.damaged = Some((old.path, old.kept_len));
            }
        }
    }

    /// Syncs and closes the current file, then opens the one named after the current second.
    async fn rotate(&mut self) -> Result<(), SinkError> {
        if let Some((path, len)) = self.damaged.take() {
            if let Err(e) = cut_to(&path, len).await {
                self.damaged = Some((path, len));
                return Err(e);
            }
        }
        if let Some(mut old) = self.current.take() {
            sync(&mut old).await?;
        }
        let name = format!(
            "pg_flo_log_{}.jsonl",
            (self.clock)().format("%Y%m%dT%H%M%SZ")
        );
        let path = self.dir.join(name);
        let file = tokio::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .await
            .map_err(|source| io_error("opening", &path, source))?;
        let len = file
            .metadata()
            .await
            .map_err(|source| io_error("reading the length of", &path, source))?
            .len();
        // Make the new directory entry durable too.
        let dir = File::open(&self.dir)
            .await
            .map_err(|source| io_error("opening output directory", &self.dir, source))?;
        dir.sync_all()
            .await
            .map_err(|source| io_error("syncing output directory", &self.dir, source))?;
        tracing::info!(file = %path.display(), "rotated to new log file");
        self.current = Some(Box::new(OpenFile {
            file,
            path,
            len,
            kept_len: len,
            written: 0,
            opened: Instant::now(),
            dirty: false,
        }));
        Ok(())
    }

    /// Replaces the wall clock used for file names.
    #[cfg(test)]
    fn with_clock(mut self, clock: impl FnMut() -> DateTime<Utc> + Send + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }
}

async fn sync(file: &mut OpenFile) -> Result<(), SinkError> {
    if !file.dirty {
        return Ok(());
    }
    file.file
        .flush()
        .await
        .map_err(|source| io_error("writing", &file.path, source))?;
    file.file
        .sync_data()
        .await
        .map_err(|source| io_error("syncing", &file.path, source))?;
    file.dirty = false;
    Ok(())
}

/// The content of [`POSITION_FILE`].
#[derive(Debug, PartialEq)]
struct Stored {
    group: String,
    position: Position,
    /// The log file written last (a plain file name in the output directory).
    file: Option<String>,
    /// Its length at the commit of `position`.
    offset: u64,
}

/// [`Stored`] as written: the LSN in PostgreSQL's `X/Y` form, for people reading the file.
#[derive(Serialize, Deserialize)]
struct StoredJson {
    group: String,
    commit_lsn: String,
    seq: u64,
    file: Option<String>,
    offset: u64,
}

impl Stored {
    fn to_json(&self) -> Vec<u8> {
        let json = StoredJson {
            group: self.group.clone(),
            commit_lsn: Lsn(self.position.commit_lsn).to_string(),
            seq: self.position.seq,
            file: self.file.clone(),
            offset: self.offset,
        };
        let mut out = serde_json::to_vec(&json).unwrap_or_default();
        out.push(b'\n');
        out
    }

    fn parse(bytes: &[u8]) -> Result<Stored, String> {
        let json: StoredJson = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let lsn: Lsn = json
            .commit_lsn
            .parse()
            .map_err(|e: crate::lsn::ParseLsnError| e.to_string())?;
        if let Some(file) = &json.file {
            if !is_log_name(file) {
                return Err(format!("{file:?} is not a log file name of this sink"));
            }
        }
        Ok(Stored {
            group: json.group,
            position: Position {
                commit_lsn: lsn.0,
                seq: json.seq,
            },
            file: json.file,
            offset: json.offset,
        })
    }
}

/// Whether `name` is `pg_flo_log_<yyyyMMddTHHmmss>Z.jsonl`.
fn is_log_name(name: &str) -> bool {
    let Some(stamp) = name
        .strip_prefix("pg_flo_log_")
        .and_then(|s| s.strip_suffix("Z.jsonl"))
    else {
        return false;
    };
    let b = stamp.as_bytes();
    b.len() == 15
        && b[8] == b'T'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 8 || c.is_ascii_digit())
}

/// Reads the position `group` stored in `dir`; `None` when there is none yet.
fn read_position(dir: &Path, group: &str) -> Result<Option<Stored>, SinkError> {
    let path = dir.join(POSITION_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io_error("reading", &path, source)),
    };
    let stored = Stored::parse(&bytes).map_err(|e| {
        SinkError::Invalid(format!(
            "cannot read the file sink's position {} ({e}); delete it to start without a stored \
             position (changes still in the stream may then be written twice)",
            path.display()
        ))
    })?;
    if stored.group != group {
        return Err(SinkError::Invalid(format!(
            "the output directory {} holds the position of group {:?}, not {group:?}: give each \
             group its own --file-output-dir (or delete {} if group {:?} no longer writes there)",
            dir.display(),
            stored.group,
            path.display(),
            stored.group
        )));
    }
    Ok(Some(stored))
}

/// Writes `stored` to [`POSITION_FILE`] atomically and durably.
async fn write_position(dir: &Path, stored: &Stored) -> Result<(), SinkError> {
    let tmp = dir.join(format!("{POSITION_FILE}.tmp"));
    let path = dir.join(POSITION_FILE);
    let write = async {
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .await?;
        file.write_all(&stored.to_json()).await?;
        file.sync_all().await
    };
    write
        .await
        .map_err(|source| io_error("writing", &tmp, source))?;
    tokio::fs::rename(&tmp, &path)
        .await
        .map_err(|source| io_error("renaming into place", &path, source))?;
    let d = File::open(dir)
        .await
        .map_err(|source| io_error("opening output directory", dir, source))?;
    d.sync_all()
        .await
        .map_err(|source| io_error("syncing output directory", dir, source))
}

/// At start: cuts the file of the last commit back to its committed length, and the newest log
/// file back to its last whole line.
fn recover(dir: &Path, stored: Option<&Stored>) -> Result<(), SinkError> {
    if let Some(Stored {
        file: Some(file),
        offset,
        ..
    }) = stored
    {
        let path = dir.join(file);
        if path.exists() {
            cut_back(&path, |_| Ok(*offset))?;
        }
    }
    let mut newest: Option<String> = None;
    let entries = std::fs::read_dir(dir)
        .map_err(|source| io_error("listing output directory", dir, source))?;
    for entry in entries {
        let entry = entry.map_err(|source| io_error("listing output directory", dir, source))?;
        if let Ok(name) = entry.file_name().into_string() {
            if is_log_name(&name) && newest.as_ref().is_none_or(|n| name > *n) {
                newest = Some(name);
            }
        }
    }
    if let Some(name) = newest {
        let path = dir.join(name);
        cut_back(&path, whole_lines_len)?;
    }
    Ok(())
}

/// Cuts `path` back to the length `keep` computes, if that is shorter.
fn cut_back(
    path: &Path,
    keep: impl FnOnce(&std::fs::File) -> std::io::Result<u64>,
) -> Result<(), SinkError> {
    let step = |source| io_error("cutting back", path, source);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(step)?;
    let len = file.metadata().map_err(step)?.len();
    let keep = keep(&file).map_err(step)?;
    if keep < len {
        file.set_len(keep).map_err(step)?;
        file.sync_all().map_err(step)?;
        tracing::warn!(file = %path.display(), kept_bytes = keep, dropped_bytes = len - keep, "cut a log file back to its last committed or whole line");
    }
    Ok(())
}

/// The length of `file` up to and including its last `\n` (0 without one).
fn whole_lines_len(file: &std::fs::File) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt as _;
    let mut end = file.metadata()?.len();
    let mut buf = vec![0u8; 64 << 10];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Cuts `path` back to `len` bytes if it is longer (a missing file has nothing to cut).
async fn cut_to(path: &Path, len: u64) -> Result<(), SinkError> {
    let path_owned = path.to_owned();
    let keep = move |_: &std::fs::File| Ok(len);
    let result = tokio::task::spawn_blocking(move || {
        if path_owned.exists() {
            cut_back(&path_owned, keep)
        } else {
            Ok(())
        }
    })
    .await;
    match result {
        Ok(r) => r,
        Err(e) => Err(SinkError::Invalid(format!(
            "cutting back {} failed: {e}",
            path.display()
        ))),
    }
}

fn io_error(step: &str, path: &Path, source: std::io::Error) -> SinkError {
    SinkError::Io {
        what: format!("{step} {}", path.display()),
        source,
    }
}

impl Sink for FileSink {
    fn name(&self) -> &'static str {
        "file"
    }

    async fn applied_position(&mut self) -> Result<Option<Position>, SinkError> {
        Ok(self.applied)
    }

    async fn apply(&mut self, batch: &ChangeBatch) -> Result<(), SinkError> {
        if self.lines.render(batch) {
            self.write_out().await?;
        }
        Ok(())
    }

    async fn commit(&mut self, through: Position) -> Result<(), SinkError> {
        self.write_out().await?;
        if let Some(current) = self.current.as_mut() {
            if let Err(err) = sync(current).await {
                self.drop_current();
                return Err(err);
            }
        }
        let file = match &self.current {
            Some(current) => current
                .path
                .file_name()
                .map(|n| (n.to_string_lossy().into_owned(), current.len)),
            None => self.committed_file.clone(),
        };
        let stored = Stored {
            group: self.group.clone(),
            position: through,
            file: file.as_ref().map(|(name, _)| name.clone()),
            offset: file.as_ref().map_or(0, |(_, len)| *len),
        };
        if let Err(err) = write_position(&self.dir, &stored).await {
            // As after a crash before the position was stored: the lines go again.
            self.drop_current();
            return Err(err);
        }
        if let Some(current) = self.current.as_mut() {
            current.kept_len = current.len;
        }
        self.committed_file = file;
        self.applied = Some(through);
        Ok(())
    }

    async fn rollback(&mut self) -> Result<(), SinkError> {
        self.lines.clear();
        // Lines spilled since the last commit are redelivered: cut them.
        if self.current.as_ref().is_some_and(|c| c.len > c.kept_len) {
            self.drop_current();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;
    use std::sync::atomic::{AtomicU64, Ordering};

    use crate::fixtures::{int_insert_line as line, int_inserts as batch};

    /// A fresh directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(test: &str) -> Self {
            static N: AtomicU64 = AtomicU64::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "pg_flo_file_sink_{test}_{}_{n}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// (file name, contents), sorted by name.
    /// The log files (not the position file).
    fn files(dir: &Path) -> Vec<(String, String)> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| is_log_name(e.file_name().to_str().unwrap()))
            .map(|e| {
                (
                    e.file_name().into_string().unwrap(),
                    std::fs::read_to_string(e.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    }

    /// A clock that moves one second per call from 2024-03-20T10:00:00Z.
    fn ticking_clock() -> impl FnMut() -> DateTime<Utc> + Send {
        let mut next = 1_710_928_800;
        move || {
            next += 1;
            DateTime::from_timestamp(next - 1, 0).unwrap()
        }
    }

    #[tokio::test]
    async fn writes_lines_on_commit_into_a_private_file() {
        let tmp = TempDir::new("commit");
        let dir = tmp.0.join("nested/out");
        let mut sink = FileSink::new(dir.clone(), "g").unwrap();
        assert!(files(&dir).is_empty(), "the file is opened lazily");

        let b = batch(&["1", "2"]);
        sink.apply(&b).await.unwrap();
        assert!(
            files(&dir).is_empty(),
            "nothing is written before the commit"
        );
        sink.commit(b.position()).await.unwrap();
        sink.apply(&batch(&["3"])).await.unwrap();
        sink.commit(b.position()).await.unwrap();

        let files = files(&dir);
        assert_eq!(files.len(), 1);
        let (name, contents) = &files[0];
        assert!(is_log_name(name), "{name}");
        assert_eq!(*contents, line("1") + &line("2") + &line("3"));
        let mode = std::fs::metadata(dir.join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(sink.applied_position().await.unwrap(), Some(b.position()));
        assert_eq!(sink.name(), "file");
    }

    #[tokio::test]
    async fn directory_mode_is_0750() {
        let tmp = TempDir::new("dirmode");
        FileSink::new(tmp.0.clone(), "g").unwrap();
        let mode = std::fs::metadata(&tmp.0).unwrap().permissions().mode() & 0o777;
        // The umask can only take bits away.
        assert_eq!(mode & !0o750, 0, "{mode:o}");
        assert_eq!(mode & 0o700, 0o700, "{mode:o}");
    }

    #[tokio::test]
    async fn rollback_drops_uncommitted_lines() {
        let tmp = TempDir::new("rollback");
        let mut sink = FileSink::new(tmp.0.clone(), "g").unwrap();
        let b = batch(&["1"]);
        sink.apply(&b).await.unwrap();
        sink.commit(b.position()).await.unwrap();
        sink.apply(&batch(&["2", "3"])).await.unwrap();
        sink.rollback().await.unwrap();
        sink.apply(&batch(&["4"])).await.unwrap();
        sink.commit(b.position()).await.unwrap();
        let files = files(&tmp.0);
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].1, line("1") + &line("4"));
    }

    #[tokio::test]
    async fn rotates_by_size_before_a_line() {
        let tmp = TempDir::new("size");
        let one = line("1").len() as u64;
        // Room for two lines: the third goes to a new file, checked line by line.
        let mut sink = FileSink::with_rotation(tmp.0.clone(), "g", 2 * one, MAX_FILE_AGE)
            .unwrap()
            .with_clock(ticking_clock());
        let b = batch(&["1", "2", "3", "4", "5"]);
        sink.apply(&b).await.unwrap();
        sink.commit(b.position()).await.unwrap();
        let b = batch(&["6"]);
        sink.apply(&b).await.unwrap();
        sink.commit(b.position()).await.unwrap();
        assert_eq!(
            files(&tmp.0),
            vec![
                (
                    "pg_flo_log_20240320T100000Z.jsonl".to_owned(),
                    line("1") + &line("2")
                ),
                (
                    "pg_flo_log_20240320T100001Z.jsonl".to_owned(),
                    line("3") + &line("4")
                ),
                (
                    "pg_flo_log_20240320T100002Z.jsonl".to_owned(),
                    line("5") + &line("6")
                ),
            ]
        );
    }

    #[tokio::test]
    async fn rotates_by_age_and_appends_within_the_same_second() {
        let tmp = TempDir::new("age");
        let mut sink = FileSink::with_rotation(tmp.0.clone(), "g", MAX_FILE_BYTES, Duration::ZERO)
            .unwrap()
            .with_clock(ticking_clock());
        let b = batch(&["1", "2"]);
        sink.apply(&b).await.unwrap();
        sink.commit(b.position()).await.unwrap();
        assert_eq!(
            files(&tmp.0),
            vec![
                ("pg_flo_log_20240320T100000Z.jsonl".to_owned(), line("1")),
                ("pg_flo_log_20240320T100001Z.jsonl".to_owned(), line("2")),
            ]
        );

        let frozen = || DateTime::from_timestamp(1_710_928_800, 0).unwrap();
        let mut sink = FileSink::with_rotation(tmp.0.clone(), "g", MAX_FILE_BYTES, Duration::ZERO)
            .unwrap()
            .with_clock(frozen);
        let b = batch(&["3", "4"]);
        sink.apply(&b).await.unwrap();
        sink.commit(b.position()).await.unwrap();
        assert_eq!(
            files(&tmp.0)[0],
            (
                "pg_flo_log_20240320T100000Z.jsonl".to_owned(),
                line("1") + &line("3") + &line("4")
            )
        );
    }

    #[tokio::test]
    async fn spills_a_large_transaction_before_its_commit() {
        let tmp = TempDir::new("spill");
        let mut sink = FileSink::new(tmp.0.clone(), "g").unwrap();
        sink.lines.spill_bytes = 1;
        sink.apply(&batch(&["1"])).await.unwrap();
        assert_eq!(files(&tmp.0)[0].1, line("1"));
    }

    const NAME: &str = "pg_flo_log_20240320T100000Z.jsonl";

    fn frozen() -> DateTime<Utc> {
        DateTime::from_timestamp(1_710_928_800, 0).unwrap()
    }

    fn at(lsn: u64, ids: &[&str]) -> ChangeBatch {
        let mut b = batch(ids);
        b.commit_lsn = lsn;
        b
    }

    #[tokio::test]
    async fn a_new_sink_reports_the_committed_position() {
        let tmp = TempDir::new("position");
        let mut sink = FileSink::new(tmp.0.clone(), "g").unwrap();
        assert_eq!(sink.applied_position().await.unwrap(), None);
        let b = at(0x1_0000_0200, &["1"]);
        sink.apply(&b).await.unwrap();
        sink.commit(b.position()).await.unwrap();
        drop(sink);

        let mut again = FileSink::new(tmp.0.clone(), "g").unwrap();
        assert_eq!(again.applied_position().await.unwrap(), Some(b.position()));
        let path = tmp.0.join(POSITION_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(r#""commit_lsn":"1/200""#), "{text}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!tmp.0.join(format!("{POSITION_FILE}.tmp")).exists());

        // A commit without output (every change filtered away) still moves the position.
        let b2 = at(0x1_0000_0300, &[]);
        again.apply(&b2).await.unwrap();
        again.commit(b2.position()).await.unwrap();
        let mut third = FileSink::new(tmp.0.clone(), "g").unwrap();
        assert_eq!(third.applied_position().await.unwrap(), Some(b2.position()));
        assert_eq!(files(&tmp.0)[0].1, line("1"));
    }

    #[test]
    fn position_files_that_cannot_be_trusted_are_refused() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"group":"other","commit_lsn":"0/1","seq":0,"file":null,"offset":0}"#,
                "holds the position of group \"other\", not \"g\"",
            ),
            ("{", "cannot read the file sink's position"),
            (
                r#"{"group":"g","commit_lsn":"nope","seq":0,"file":null,"offset":0}"#,
                "invalid LSN",
            ),
            (
                r#"{"group":"g","commit_lsn":"0/1","seq":0,"file":"../etc/passwd","offset":0}"#,
                "is not a log file name",
            ),
        ];
        for (content, want) in cases {
            let tmp = TempDir::new("refused");
            std::fs::create_dir_all(&tmp.0).unwrap();
            std::fs::write(tmp.0.join(POSITION_FILE), content).unwrap();
            let err = FileSink::new(tmp.0.clone(), "g").err().unwrap();
            assert_eq!(err.retry(), crate::sink::Retry::Permanent, "{content}");
            assert!(err.to_string().contains(want), "{content}: {err}");
        }
    }

    #[test]
    fn whole_lines_len_finds_the_last_newline() {
        let big = "x".repeat(200 << 10);
        let cases: Vec<(String, u64)> = vec![
            (String::new(), 0),
            ("a\n".into(), 2),
            ("a\nb".into(), 2),
            ("abc".into(), 0),
            (big.clone(), 0),
            (format!("a\n{big}"), 2),
            (format!("{big}\n{big}"), big.len() as u64 + 1),
        ];
        let tmp = TempDir::new("whole");
        std::fs::create_dir_all(&tmp.0).unwrap();
        for (content, want) in cases {
            let path = tmp.0.join("f");
            std::fs::write(&path, &content).unwrap();
            let f = std::fs::File::open(&path).unwrap();
            assert_eq!(
                whole_lines_len(&f).unwrap(),
                want,
                "{} bytes",
                content.len()
            );
        }
    }

    #[tokio::test]
    async fn a_partial_trailing_line_is_cut_at_start() {
        let tmp = TempDir::new("partial");
        std::fs::create_dir_all(&tmp.0).unwrap();
        let older = "pg_flo_log_20240320T090000Z.jsonl";
        std::fs::write(tmp.0.join(older), line("0") + r#"{"old"#).unwrap();
        std::fs::write(tmp.0.join(NAME), line("1") + r#"{"EmittedAt":"2024-03-"#).unwrap();
        let mut sink = FileSink::new(tmp.0.clone(), "g")
            .unwrap()
            .with_clock(frozen);
        // Cut at start, before anything is written.
        assert_eq!(files(&tmp.0)[1], (NAME.to_owned(), line("1")));
        let b = batch(&["2", "3"]);
        sink.apply(&b).await.unwrap();
        sink.commit(b.position()).await.unwrap();
        assert_eq!(
            files(&tmp.0),
            vec![
                // Only the newest file can end in a crash; older ones are left alone.
                (older.to_owned(), line("0") + r#"{"old"#),
                (NAME.to_owned(), line("1") + &line("2") + &line("3")),
            ]
        );
    }

    #[tokio::test]
    async fn lines_written_after_the_last_commit_are_cut_at_start() {
        let tmp = TempDir::new("uncommitted");
        let mut sink = FileSink::new(tmp.0.clone(), "g")
            .unwrap()
            .with_clock(frozen);
        let b = at(0x100, &["1"]);
        sink.apply(&b).await.unwrap();
        sink.commit(b.position()).await.unwrap();
        // A spilled transaction, then a crash in the middle of a line.
        sink.lines.spill_bytes = 1;
        sink.apply(&at(0x200, &["2"])).await.unwrap();
        drop(sink);
        let path = tmp.0.join(NAME);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, line("3").as_bytes()).unwrap();
        std::io::Write::write_all(&mut f, b"{\"Emit").unwrap();
        drop(f);
        assert_eq!(
            files(&tmp.0)[0].1,
            line("1") + &line("2") + &line("3") + "{\"Emit"
        );

        let mut again = FileSink::new(tmp.0.clone(), "g")
            .unwrap()
            .with_clock(frozen);
        assert_eq!(files(&tmp.0)[0].1, line("1"));
        assert_eq!(again.applied_position().await.unwrap(), Some(b.position()));
        // The redelivered changes are written once.
        let b2 = at(0x200, &["2"]);
        again.apply(&b2).await.unwrap();
        again.commit(b2.position()).await.unwrap();
        assert_eq!(files(&tmp.0)[0].1, line("1") + &line("2"));
    }

    #[tokio::test]
    async fn rollback_cuts_lines_spilled_since_the_last_commit() {
        let tmp = TempDir::new("rollback_spill");
        let mut sink = FileSink::new(tmp.0.clone(), "g")
            .unwrap()
            .with_clock(frozen);
        let b = batch(&["1"]);
        sink.apply(&b).await.unwrap();
        sink.commit(b.position()).await.unwrap();
        sink.lines.spill_bytes = 1;
        sink.apply(&batch(&["2"])).await.unwrap();
        assert_eq!(files(&tmp.0)[0].1, line("1") + &line("2"));
        sink.rollback().await.unwrap();
        sink.apply(&batch(&["2"])).await.unwrap();
        sink.commit(b.position()).await.unwrap();
        assert_eq!(files(&tmp.0)[0].1, line("1") + &line("2"));
    }

    #[tokio::test]
    async fn a_failed_position_write_leaves_no_duplicate_lines() {
        let tmp = TempDir::new("position_fails");
        let mut sink = FileSink::new(tmp.0.clone(), "g")
            .unwrap()
            .with_clock(frozen);
        let b1 = at(0x100, &["1"]);
        sink.apply(&b1).await.unwrap();
        sink.commit(b1.position()).await.unwrap();
        // The data is written and synced, then storing the position fails.
        let blocker = tmp.0.join(format!("{POSITION_FILE}.tmp"));
        std::fs::create_dir(&blocker).unwrap();
        let b2 = at(0x200, &["2"]);
        sink.apply(&b2).await.unwrap();
        let err = sink.commit(b2.position()).await.unwrap_err();
        assert_eq!(err.retry(), crate::sink::Retry::Transient, "{err}");
        assert_eq!(files(&tmp.0)[0].1, line("1") + &line("2"));
        assert_eq!(sink.applied_position().await.unwrap(), Some(b1.position()));
        // The worker rolls back and redelivers.
        std::fs::remove_dir(&blocker).unwrap();
        sink.rollback().await.unwrap();
        sink.apply(&b2).await.unwrap();
        sink.commit(b2.position()).await.unwrap();
        assert_eq!(files(&tmp.0)[0].1, line("1") + &line("2"));
        assert_eq!(sink.applied_position().await.unwrap(), Some(b2.position()));
    }
}
