//! Self-removing temp directories for the throw-away servers and processes.
//!
//! A tiny replacement for the `tempfile` crate: every server and child process of the
//! harness keeps its data, sockets and logs in one of these, and dropping it removes the
//! tree. Set `PG_FLO_E2E_KEEP_TMP=1` to keep the directories for a post-mortem.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Environment variable that, when set to a non-empty value, keeps temp dirs on drop.
pub const KEEP_TMP_ENV: &str = "PG_FLO_E2E_KEEP_TMP";

/// A fresh directory under the system temp dir, removed recursively on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `$TMPDIR/pg-flo-e2e-<prefix>-<pid>-<n>-<nanos>` (mode 0755).
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;

        let base = std::env::temp_dir();
        for _ in 0..100 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default();
            let path = base.join(format!(
                "pg-flo-e2e-{prefix}-{}-{n}-{nanos:x}",
                std::process::id()
            ));
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                        .with_context(|| format!("chmod temp dir {}", path.display()))?;
                    return Ok(Self { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("create temp dir {}", path.display()))
                }
            }
        }
        anyhow::bail!(
            "could not create a unique temp dir under {}",
            base.display()
        )
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os(KEEP_TMP_ENV).is_some_and(|v| !v.is_empty()) {
            eprintln!(
                "keeping temp dir {} ({KEEP_TMP_ENV} is set)",
                self.path.display()
            );
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
