//! Walks an input folder into the job's file list: recursive, symlinks to files
//! followed, directory loops detected and reported, sorted by relative path
//! (byte order of the `/`-separated UTF-8 path) so every mode sees the same
//! order. Content is not read here: the engine sniffs it.
use std::path::{Path, PathBuf};

use imgnorm_core::record::{Record, Status};

/// The result of a walk: files to process, and entries that already have their
/// manifest row (loops, unreadable folders, non-UTF-8 names).
#[derive(Debug, Default, Clone)]
pub struct Discovered {
    /// Relative paths of regular files, sorted.
    pub files: Vec<String>,
    /// Rows for entries that cannot be processed at all, sorted by path.
    pub problems: Vec<Record>,
}

impl Discovered {
    /// Every entry: files plus problems.
    pub fn total(&self) -> u64 {
        (self.files.len() + self.problems.len()) as u64
    }
}

/// The input folder itself is unusable.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The root does not exist or cannot be read.
    #[error("cannot read input folder {path}: {source}")]
    Root {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The root is not a folder.
    #[error("input {0} is not a folder")]
    NotADir(PathBuf),
}

/// Walks `root`. Paths under `exclude` (e.g. an output folder inside the input)
/// are left out.
pub fn discover(root: &Path, exclude: Option<&Path>) -> Result<Discovered, DiscoveryError> {
    let meta = std::fs::metadata(root).map_err(|source| DiscoveryError::Root {
        path: root.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(DiscoveryError::NotADir(root.to_path_buf()));
    }
    let exclude = exclude.and_then(|p| p.canonicalize().ok());
    let mut out = Discovered::default();
    let walker = walkdir::WalkDir::new(root)
        .follow_links(true)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| match &exclude {
            Some(x) if e.file_type().is_dir() => e.path().canonicalize().ok().as_ref() != Some(x),
            _ => true,
        });
    for entry in walker {
        match entry {
            Ok(e) => {
                if e.file_type().is_dir() {
                    continue;
                }
                let rel = match relative(root, e.path()) {
                    Ok(r) => r,
                    Err(shown) => {
                        out.problems.push(Record::bare(
                            shown,
                            Status::Skipped,
                            Some("file name is not valid UTF-8".into()),
                        ));
                        continue;
                    }
                };
                if e.file_type().is_file() {
                    out.files.push(rel);
                } else {
                    out.problems.push(Record::bare(
                        rel,
                        Status::Skipped,
                        Some("not a regular file".into()),
                    ));
                }
            }
            Err(err) => {
                let path = err.path().map(Path::to_path_buf);
                let rel = path
                    .as_deref()
                    .map(|p| relative(root, p).unwrap_or_else(|s| s))
                    .unwrap_or_default();
                let (status, reason) = if err.loop_ancestor().is_some() {
                    (
                        Status::Skipped,
                        "symlink loop: this link points to one of its own parent folders"
                            .to_string(),
                    )
                } else if path
                    .as_deref()
                    .is_some_and(|p| p.symlink_metadata().is_ok() && p.metadata().is_err())
                {
                    (Status::Skipped, "broken symlink".to_string())
                } else {
                    let why = err
                        .io_error()
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| err.to_string());
                    (Status::Failed, format!("cannot read: {why}"))
                };
                out.problems.push(Record::bare(rel, status, Some(reason)));
            }
        }
    }
    out.files.sort_unstable();
    out.files.dedup();
    out.problems.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The `/`-separated path of `p` under `root`; `Err` with a lossy rendering when
/// it is not UTF-8.
fn relative(root: &Path, p: &Path) -> Result<String, String> {
    let rel = p.strip_prefix(root).unwrap_or(p);
    let mut parts = Vec::new();
    for c in rel.components() {
        match c.as_os_str().to_str() {
            Some(s) => parts.push(s),
            None => return Err(rel.to_string_lossy().replace('\\', "/")),
        }
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_recursive_with_loop_detection() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/c")).unwrap();
        std::fs::write(root.join("b/c/z.png"), b"x").unwrap();
        std::fs::write(root.join("a-b.png"), b"x").unwrap();
        std::fs::write(root.join("b/a.png"), b"x").unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(root.join("b"), root.join("b/c/loop")).unwrap();
            std::os::unix::fs::symlink(root.join("a-b.png"), root.join("link.png")).unwrap();
            std::os::unix::fs::symlink(root.join("missing"), root.join("dangling.png")).unwrap();
        }
        let d = discover(root, None).unwrap();
        assert_eq!(d.files, vec!["a-b.png", "b/a.png", "b/c/z.png", "link.png"]);
        let reasons: Vec<_> = d
            .problems
            .iter()
            .map(|r| (r.path.as_str(), r.reason.clone().unwrap()))
            .collect();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(
            reasons
                .iter()
                .any(|(p, r)| *p == "b/c/loop" && r.contains("loop"))
        );
        assert!(
            reasons
                .iter()
                .any(|(p, r)| *p == "dangling.png" && r.contains("broken"))
        );
    }

    #[test]
    fn excluded_output_folder_is_not_walked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("out")).unwrap();
        std::fs::write(dir.path().join("out/x.npy"), b"x").unwrap();
        std::fs::write(dir.path().join("a.png"), b"x").unwrap();
        let d = discover(dir.path(), Some(&dir.path().join("out"))).unwrap();
        assert_eq!(d.files, vec!["a.png"]);
    }

    #[test]
    fn missing_root_is_an_error() {
        assert!(discover(Path::new("/nonexistent/imgnorm"), None).is_err());
    }
}
