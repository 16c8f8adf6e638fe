//! Exclusive use of an output folder by one unfinished job. A job's owner
//! (the centralized run, or the master running the job) holds an
//! [`OutputClaim`] from before it touches the folder (`formats::prepare`
//! wipes a stale staging folder and recreates the stack) until the job has
//! ended, so no job can delete or truncate another job's files.
//!
//! The claim is an exclusive `flock(2)` on the output folder itself: it
//! leaves no file behind, dies with its process (a SIGKILLed master frees
//! the folder for its `resume`), and covers every process on the host, two
//! masters and a `centralized` run alike, whatever path spelling (symlinks,
//! relative paths) each used. Locks are per open file, so a second job of
//! the same master is refused as well; the master also keeps its own
//! registry of unfinished jobs' outputs to name the job in the refusal and to
//! refuse outputs nested inside one another. File systems without `flock`
//! (some network mounts) fall back to that registry alone, with a warning.
//! Object-store outputs have no folder to lock; the registry covers them.
use std::fs::File;
use std::path::{Path, PathBuf};

/// Why an output could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// Another job that has not finished writes there.
    #[error(
        "output {path} is in use by another imgnorm run that has not finished (it holds a lock on the folder): wait for it to end, stop it, or choose another output"
    )]
    InUse {
        /// The output folder.
        path: PathBuf,
    },
    /// The folder could not be opened.
    #[error("cannot open output {path}: {source}")]
    Open {
        /// The output folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// An output folder held by one job (see the module docs); released when
/// dropped.
#[derive(Debug)]
pub struct OutputClaim {
    path: PathBuf,
    /// The locked folder (`None`: an object-store URL, or no `flock` here).
    _dir: Option<File>,
}

impl OutputClaim {
    /// Claims the existing folder `path` (an object-store URL is claimed
    /// without a lock). Never waits: a folder in use is refused at once.
    pub fn acquire(path: &Path) -> Result<OutputClaim, ClaimError> {
        if crate::storage::is_object_url(path) {
            return Ok(OutputClaim {
                path: path.to_path_buf(),
                _dir: None,
            });
        }
        let dir = File::open(path).map_err(|source| ClaimError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        lock(&dir, path)?;
        Ok(OutputClaim {
            path: path.to_path_buf(),
            _dir: Some(dir),
        })
    }

    /// The claimed output.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(unix)]
fn lock(dir: &File, path: &Path) -> Result<(), ClaimError> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock(2) on a descriptor owned by `dir`, which outlives it.
    let r = unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EWOULDBLOCK) => Err(ClaimError::InUse {
            path: path.to_path_buf(),
        }),
        _ => {
            tracing::warn!(
                output = %path.display(),
                error = %e,
                "cannot lock the output folder (no flock on this file system?): only this process's own jobs are kept apart"
            );
            Ok(())
        }
    }
}

#[cfg(not(unix))]
fn lock(_dir: &File, _path: &Path) -> Result<(), ClaimError> {
    Ok(())
}

/// Whether two outputs overlap: the same folder, or one inside the other
/// (compared as absolute paths, component by component).
pub fn overlap(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_claim_per_folder_until_released() {
        let dir = tempfile::tempdir().expect("tmp");
        let first = OutputClaim::acquire(dir.path()).expect("free");
        let second = OutputClaim::acquire(dir.path());
        assert!(matches!(second, Err(ClaimError::InUse { .. })));
        drop(first);
        OutputClaim::acquire(dir.path()).expect("free again");
        assert!(std::fs::read_dir(dir.path()).expect("ls").next().is_none());
    }

    #[test]
    fn nested_outputs_overlap() {
        assert!(overlap(Path::new("/a/b"), Path::new("/a/b")));
        assert!(overlap(Path::new("/a/b/c"), Path::new("/a/b")));
        assert!(!overlap(Path::new("/a/bc"), Path::new("/a/b")));
    }
}
