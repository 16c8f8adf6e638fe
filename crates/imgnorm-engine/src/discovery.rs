//! Walks an input folder into the job's file list: recursive, symlinks to files
//! followed, directory loops detected and reported, sorted by relative path
//! (byte order of the `/`-separated UTF-8 path) so every mode sees the same
//! order. Content is not read here: the engine sniffs it.
//!
//! A job may instead name its files in a list ([`read_list`], `--input-list`):
//! read line by line, the entries resolved against the input root, then
//! sorted and deduplicated by the same rule, so a list naming exactly the
//! files of a folder gives the folder's manifest.
use std::io::BufRead;
use std::path::{Path, PathBuf};

use imgnorm_core::pathlist::{PathList, PathListBuilder};
use imgnorm_core::record::{Record, Status};

/// The result of a walk: files to process, and entries that already have their
/// manifest row (loops, unreadable folders, non-UTF-8 names).
#[derive(Debug, Default, Clone)]
pub struct Discovered {
    /// Relative paths of regular files, sorted (compressed: a job of
    /// millions of files is listed without holding every name whole).
    pub files: PathList,
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
    /// The input list cannot be read.
    #[error("cannot read input list {path}: {source}")]
    List {
        /// The list file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An entry of the input list does not name a file under the input root.
    #[error("input list {path}, line {line}: {entry:?} {why}")]
    ListEntry {
        /// The list file.
        path: PathBuf,
        /// Line number, from 1.
        line: u64,
        /// The entry as written.
        entry: String,
        /// What is wrong with it.
        why: String,
    },
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
    let mut files = PathListBuilder::new();
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
                    files.push(rel);
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
    out.files = files.finish();
    out.problems.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The job's files: `list` read when given ([`read_list`], its entries
/// under `root`), else `root` walked ([`discover`], `exclude` left out).
pub fn find(
    root: &Path,
    list: Option<&Path>,
    exclude: Option<&Path>,
) -> Result<Discovered, DiscoveryError> {
    match list {
        Some(l) => read_list(l, root),
        None => discover(root, exclude),
    }
}

/// The input root of a list given without `--input`: the folder holding
/// the list file (`.` for a bare file name).
pub fn list_root(list: &Path) -> PathBuf {
    match list.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Reads an input list (`--input-list`): one entry per line, each a path
/// relative to `root`, or an absolute path (a full `s3://` URL when `root`
/// is an `s3://` prefix) under `root`. A trailing `\r` is dropped; blank
/// lines and lines starting with `#` are skipped; a leading `./` is allowed.
/// Entries are sorted by the folder walk's rule and duplicates kept once.
/// Files are not opened here: one that is missing or unreadable gets its
/// failed row from the engine, like a file that vanishes after a walk. A
/// line that is not UTF-8 gets a skipped row (its lossy rendering), as a
/// non-UTF-8 file name does in a walk. An entry that is outside `root` or is
/// not a clean relative path (`..`, `//`, NUL, too long) refuses the whole
/// list, naming its line: the manifest never holds a path outside the root.
pub fn read_list(list: &Path, root: &Path) -> Result<Discovered, DiscoveryError> {
    let read_err = |source| DiscoveryError::List {
        path: list.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(list).map_err(read_err)?;
    let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
    let prefix = root_prefix(root);
    let mut out = Discovered::default();
    let mut files = PathListBuilder::new();
    let mut buf = Vec::new();
    let mut line = 0u64;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(read_err)? == 0 {
            break;
        }
        line += 1;
        let mut raw = buf.as_slice();
        raw = raw.strip_suffix(b"\n").unwrap_or(raw);
        raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.is_empty() || raw[0] == b'#' {
            continue;
        }
        let Ok(entry) = std::str::from_utf8(raw) else {
            out.problems.push(Record::bare(
                String::from_utf8_lossy(raw).into_owned(),
                Status::Skipped,
                Some("file name is not valid UTF-8".into()),
            ));
            continue;
        };
        let rel = list_entry(entry, &prefix).map_err(|why| DiscoveryError::ListEntry {
            path: list.to_path_buf(),
            line,
            entry: entry.to_string(),
            why,
        })?;
        files.push(rel.to_string());
    }
    out.files = files.finish();
    out.problems.sort_by(|a, b| a.path.cmp(&b.path));
    out.problems.dedup();
    Ok(out)
}

/// `root` as the prefix absolute entries must start with: `/`-terminated.
fn root_prefix(root: &Path) -> String {
    let mut p = root.to_string_lossy().into_owned();
    while p.len() > 1 && p.ends_with('/') {
        p.pop();
    }
    if !p.ends_with('/') {
        p.push('/');
    }
    p
}

/// The relative path an input-list entry names under the root whose
/// [`root_prefix`] is `prefix`, or why it names none.
fn list_entry<'a>(entry: &'a str, prefix: &str) -> Result<&'a str, String> {
    let rel = if entry.starts_with('/') || entry.contains("://") {
        entry
            .strip_prefix(prefix)
            .ok_or_else(|| format!("is not under the input root {prefix}"))?
    } else {
        let mut rel = entry;
        while let Some(r) = rel.strip_prefix("./") {
            rel = r;
        }
        rel
    };
    imgnorm_core::paths::check_relative(rel).map_err(|e| format!("is not a usable path: {e}"))?;
    Ok(rel)
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
        assert_eq!(
            d.files.to_vec(),
            vec!["a-b.png", "b/a.png", "b/c/z.png", "link.png"]
        );
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
        assert_eq!(d.files.to_vec(), vec!["a.png"]);
    }

    fn list(dir: &Path, text: &[u8]) -> PathBuf {
        let p = dir.join("list.txt");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn list_entries_are_sorted_deduplicated_and_resolved_against_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        let abs = format!("{}/b/abs.png\n", root.display());
        let mut text = b"# a comment\n\nz.png\r\n./a/x.png\nmissing.jpg\nz.png\n".to_vec();
        text.extend_from_slice(abs.as_bytes());
        text.extend_from_slice(b"bad\xffname.png\n");
        text.extend_from_slice(b"no-newline-at-end.png");
        let d = read_list(&list(dir.path(), &text), &root).unwrap();
        assert_eq!(
            d.files.to_vec(),
            vec![
                "a/x.png",
                "b/abs.png",
                "missing.jpg",
                "no-newline-at-end.png",
                "z.png"
            ]
        );
        assert_eq!(d.problems.len(), 1);
        assert_eq!(d.problems[0].status, Status::Skipped);
        assert!(d.problems[0].path.starts_with("bad"));
    }

    #[test]
    fn list_entries_outside_the_root_refuse_the_list_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        for (text, line) in [
            (&b"a.png\n../x.png\n"[..], 2),
            (b"/etc/passwd\n", 1),
            (b"# c\na//b.png\n", 2),
            (b"s3://bucket/x.png\n", 1),
            (b"a/\n", 1),
        ] {
            let e = read_list(&list(dir.path(), text), &root).unwrap_err();
            assert!(
                matches!(&e, DiscoveryError::ListEntry { line: l, .. } if *l == line),
                "{e}"
            );
        }
    }

    #[test]
    fn list_entries_under_an_object_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new("s3://bucket/in");
        let text = b"s3://bucket/in/k/1.png\nk/0.png\n";
        let d = read_list(&list(dir.path(), text), root).unwrap();
        assert_eq!(d.files.to_vec(), vec!["k/0.png", "k/1.png"]);
        let e = read_list(&list(dir.path(), b"s3://bucket/other/1.png\n"), root);
        assert!(e.is_err());
    }

    #[test]
    fn a_missing_list_is_an_error() {
        let e = read_list(Path::new("/nonexistent/list.txt"), Path::new("/")).unwrap_err();
        assert!(matches!(e, DiscoveryError::List { .. }), "{e}");
    }

    #[test]
    fn missing_root_is_an_error() {
        assert!(discover(Path::new("/nonexistent/imgnorm"), None).is_err());
    }
}
