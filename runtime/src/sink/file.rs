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
//! Delivery: at-least-once. [`Sink::apply`] renders into a buffer; [`Sink::commit`] writes the
//! buffer, then `fdatasync`s the file (and the directory after creating a file), so every
//! acked change survives a crash; [`Sink::rollback`] drops the lines not yet written. A
//! transaction bigger than [`SPILL_BYTES`] is written (not synced) before its commit to bound
//! memory, so after a failure in the middle of one its first lines may appear twice.
//!
//! Differences from pg_flo: the first file is opened at the first write, not at start-up (no
//! empty files from idle workers); pg_flo never synced, so acked lines could be lost in a crash.

use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::fs::File;
use tokio::io::AsyncWriteExt as _;

use crate::message::{ChangeBatch, Position};
use crate::sink::json;
use crate::sink::{Sink, SinkError};

/// A file is rotated once this many bytes were written to it.
pub const MAX_FILE_BYTES: u64 = 100 << 20;
/// A file is rotated once it was opened this long ago.
pub const MAX_FILE_AGE: Duration = Duration::from_secs(3600);
/// Buffered output is written out before the commit once it reaches this size.
pub const SPILL_BYTES: usize = 8 << 20;

/// Writes changes as JSON Lines into rotated files in one directory.
pub struct FileSink {
    dir: PathBuf,
    max_bytes: u64,
    max_age: Duration,
    spill_bytes: usize,
    /// Wall clock for file names (replaced in tests).
    clock: Box<dyn FnMut() -> DateTime<Utc> + Send>,
    /// Boxed: a tokio `File` is large and `AnySink` holds this sink inline.
    current: Option<Box<OpenFile>>,
    /// Rendered lines not yet written.
    buffer: Vec<u8>,
}

struct OpenFile {
    file: File,
    path: PathBuf,
    /// Bytes written through this handle (pg_flo's `currentSize`, reset on every rotation).
    written: u64,
    opened: Instant,
    /// Written since the last `fdatasync`.
    dirty: bool,
}

impl FileSink {
    /// Creates `output_dir` (and its parents) if needed, with pg_flo's rotation limits.
    pub fn new(output_dir: PathBuf) -> Result<FileSink, SinkError> {
        Self::with_rotation(output_dir, MAX_FILE_BYTES, MAX_FILE_AGE)
    }

    /// As [`FileSink::new`], rotating after `max_bytes` written or `max_age` open.
    pub fn with_rotation(
        output_dir: PathBuf,
        max_bytes: u64,
        max_age: Duration,
    ) -> Result<FileSink, SinkError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(&output_dir)
            .map_err(|source| io_error("creating output directory", &output_dir, source))?;
        Ok(FileSink {
            dir: output_dir,
            max_bytes,
            max_age,
            spill_bytes: SPILL_BYTES,
            clock: Box::new(Utc::now),
            current: None,
            buffer: Vec::new(),
        })
    }

    /// Writes the buffered lines, rotating before any line as pg_flo does. Written or not, those
    /// lines are done afterwards: on failure the worker rolls back and redelivers. After a
    /// failure the file is reopened on the next write.
    async fn write_out(&mut self) -> Result<(), SinkError> {
        let mut buffer = std::mem::take(&mut self.buffer);
        let result = self.write_lines(&buffer).await;
        if result.is_err() {
            self.current = None;
        }
        buffer.clear();
        self.buffer = buffer;
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
            current.written = written;
            rest = &rest[end..];
        }
        Ok(())
    }

    fn rotation_due(&self, file: &OpenFile) -> bool {
        file.written >= self.max_bytes || file.opened.elapsed() >= self.max_age
    }

    /// Syncs and closes the current file, then opens the one named after the current second.
    async fn rotate(&mut self) -> Result<(), SinkError> {
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
        Ok(None)
    }

    async fn apply(&mut self, batch: &ChangeBatch) -> Result<(), SinkError> {
        for change in &batch.changes {
            self.buffer
                .extend_from_slice(&json::render_line(batch, change));
        }
        if self.buffer.len() >= self.spill_bytes {
            self.write_out().await?;
        }
        Ok(())
    }

    async fn commit(&mut self, _through: Position) -> Result<(), SinkError> {
        self.write_out().await?;
        if let Some(current) = self.current.as_mut() {
            if let Err(err) = sync(current).await {
                self.current = None;
                return Err(err);
            }
        }
        Ok(())
    }

    async fn rollback(&mut self) -> Result<(), SinkError> {
        self.buffer.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;
    use std::sync::atomic::{AtomicU64, Ordering};

    use crate::sink::fixtures::{int_insert_line as line, int_inserts as batch};

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
    fn files(dir: &Path) -> Vec<(String, String)> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
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

    #[tokio::test]
    async fn writes_lines_on_commit_into_a_private_file() {
        let tmp = TempDir::new("commit");
        let dir = tmp.0.join("nested/out");
        let mut sink = FileSink::new(dir.clone()).unwrap();
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
        assert_eq!(sink.applied_position().await.unwrap(), None);
        assert_eq!(sink.name(), "file");
    }

    #[tokio::test]
    async fn directory_mode_is_0750() {
        let tmp = TempDir::new("dirmode");
        FileSink::new(tmp.0.clone()).unwrap();
        let mode = std::fs::metadata(&tmp.0).unwrap().permissions().mode() & 0o777;
        // The umask can only take bits away.
        assert_eq!(mode & !0o750, 0, "{mode:o}");
        assert_eq!(mode & 0o700, 0o700, "{mode:o}");
    }

    #[tokio::test]
    async fn rollback_drops_uncommitted_lines() {
        let tmp = TempDir::new("rollback");
        let mut sink = FileSink::new(tmp.0.clone()).unwrap();
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
        let mut sink = FileSink::with_rotation(tmp.0.clone(), 2 * one, MAX_FILE_AGE)
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
        let mut sink = FileSink::with_rotation(tmp.0.clone(), MAX_FILE_BYTES, Duration::ZERO)
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
        let mut sink = FileSink::with_rotation(tmp.0.clone(), MAX_FILE_BYTES, Duration::ZERO)
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
        let mut sink = FileSink::new(tmp.0.clone()).unwrap();
        sink.spill_bytes = 1;
        sink.apply(&batch(&["1"])).await.unwrap();
        assert_eq!(files(&tmp.0)[0].1, line("1"));
    }
}
