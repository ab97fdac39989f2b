//! Reading what the file sink wrote: its log files (`pg_flo_log_*`, in name order, which is
//! write order), never its position file.

use std::path::{Path, PathBuf};

/// The sink's log files in `dir`, oldest first (none if `dir` does not exist yet).
pub fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("pg_flo_log_"))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Every complete line the sink wrote so far, in write order (a line still being written is
/// left out).
pub fn whole_lines(dir: &Path) -> Vec<String> {
    log_files(dir)
        .iter()
        .flat_map(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            text.split_inclusive('\n')
                .filter_map(|l| l.strip_suffix('\n').map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// [`whole_lines`], parsed as JSON.
pub fn json_lines(dir: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    whole_lines(dir)
        .iter()
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}
