//! Reading what the JSON sinks delivered, as change signatures, without re-reading everything
//! on every poll.

use std::collections::BTreeMap;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use super::truth::json_signature;
use crate::webhook::Receiver;

/// The file sink's output: its log files (`pg_flo_log_*`, name order is write order), read
/// incrementally. At start the sink cuts lines written after its last commit and writes them
/// again as NATS redelivers them: lines read before that are checked (their bytes, which
/// carry their emission time) and dropped from the cache when they are no longer there.
#[derive(Default)]
pub struct FileOutput {
    files: BTreeMap<PathBuf, Vec<Line>>,
}

struct Line {
    start: u64,
    end: u64,
    hash: u64,
    /// `None` for DDL.
    signature: Option<String>,
}

fn hash(bytes: &[u8]) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

fn read_range(f: &mut std::fs::File, start: u64, end: u64) -> std::io::Result<Vec<u8>> {
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(end - start).read_to_end(&mut buf)?;
    Ok(buf)
}

impl FileOutput {
    /// Reads what was appended (or cut) since the last call; the signatures of every change
    /// in the output, in write order.
    pub fn read(&mut self, dir: &Path) -> anyhow::Result<Vec<String>> {
        for path in crate::file_sink::log_files(dir) {
            let lines = self.files.entry(path.clone()).or_default();
            let mut f = std::fs::File::open(&path)?;
            let len = f.metadata()?.len();
            while let Some(last) = lines.last() {
                let intact = last.end <= len
                    && hash(&read_range(&mut f, last.start, last.end)?) == last.hash;
                if intact {
                    break;
                }
                lines.pop();
            }
            let from = lines.last().map_or(0, |l| l.end);
            if len <= from {
                continue;
            }
            let buf = read_range(&mut f, from, len)?;
            let mut start = from;
            for line in buf.split_inclusive(|b| *b == b'\n') {
                if line.last() != Some(&b'\n') {
                    break; // still being written
                }
                let value: serde_json::Value = serde_json::from_slice(line).map_err(|e| {
                    anyhow::anyhow!("{} holds a line that is not JSON: {e}", path.display())
                })?;
                let signature = json_signature(&value).map_err(|e| anyhow::anyhow!("{e}"))?;
                let end = start + line.len() as u64;
                lines.push(Line {
                    start,
                    end,
                    hash: hash(line),
                    signature,
                });
                start = end;
            }
        }
        Ok(self
            .files
            .values()
            .flatten()
            .filter_map(|l| l.signature.clone())
            .collect())
    }
}

/// The webhook receiver's accepted requests, read incrementally.
#[derive(Default)]
pub struct WebhookOutput {
    requests_seen: usize,
    changes: Vec<String>,
}

impl WebhookOutput {
    /// The signatures of every change the receiver accepted (answered 2xx), in order.
    pub fn read(&mut self, receiver: &Receiver) -> anyhow::Result<&[String]> {
        let new = receiver.requests_since(self.requests_seen);
        self.requests_seen += new.len();
        for request in new.iter().filter(|r| r.accepted()) {
            let items = match request.json()? {
                serde_json::Value::Array(items) => items,
                one => vec![one],
            };
            for item in &items {
                if let Some(sig) = json_signature(item).map_err(|e| anyhow::anyhow!("{e}"))? {
                    self.changes.push(sig);
                }
            }
        }
        Ok(&self.changes)
    }
}
