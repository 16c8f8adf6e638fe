//! Crash-safe file writes: a temporary name unique across processes and
//! hosts, and write-then-rename, so a killed process never leaves a
//! truncated file under a final name.
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A temporary-file suffix no other writer uses, even across machines and
/// containers sharing the output folder: the pid alone is not enough, since
/// every worker container is pid 1, and a re-issued (speculative or
/// reclaimed) batch makes two workers write the same file at once. So: pid,
/// a hash of the host name and process start time, and a per-call counter:
/// `.PID.TAG.N.tmp`, at most 53 bytes. On its own it is a hidden file name
/// (what engines write through); appended to a short fixed name, a unique
/// sibling of that file.
pub fn unique_tmp_suffix() -> String {
    static PROCESS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let process = PROCESS.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let tag = xxhash_rust::xxh3::xxh3_64(format!("{}|{nanos}", host.trim()).as_bytes());
        format!("{}.{tag:016x}", std::process::id())
    });
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(".{process}.{n}.tmp")
}

/// Writes `bytes` to `path` via `path` + `suffix` and a rename, so a killed
/// process never leaves a truncated file under the final name. For short
/// fixed names (metadata files, shards); outputs named after inputs go
/// through [`crate::tiles::TileSink`], whose temporary name does not grow with theirs.
pub fn write_atomic(path: &Path, bytes: &[u8], suffix: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(suffix);
    let tmp = PathBuf::from(tmp);
    let result = File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `create_dir_all` for an output folder, with a clear error when the path
/// (or a folder on the way) is a file: "File exists" alone does not say
/// which.
pub fn create_output_dir(path: &Path) -> std::io::Result<()> {
    match std::fs::create_dir_all(path) {
        Err(e) if path.is_file() => Err(std::io::Error::new(
            e.kind(),
            "it is a file, not a folder (give a folder for the dataset)",
        )),
        r => r,
    }
}
