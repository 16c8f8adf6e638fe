//! Output dataset layouts (`--format`): where per-image arrays go while a
//! job runs and how the layout is completed once every image has a result.
//! Each layout is one [`Layout`] implementation in its own file (`npy.rs`,
//! `webdataset.rs`, `stack.rs`), registered in [`layout`]; this module holds
//! what they share (the staging folder, folder creation, error type) and the
//! entry points the centralized run, the engine and the master call
//! ([`prepare`], [`tree_root`], [`finish`]). See docs/FORMAT.md.
mod npy;
mod stack;
mod webdataset;

use std::path::{Path, PathBuf};

use imgnorm_core::options::{EngineOptions, OutputFormat};
use imgnorm_core::record::Record;

use crate::claim::OutputClaim;
use crate::fsio::unique_tmp_suffix;

pub use stack::{CLASSES, LABELS, PATHS, STACK, STACK_PARTIAL, StackWriter, VALID};
pub use webdataset::{sample_key, shard_name};

/// Folder under the output where per-image arrays wait to be packed into
/// shards (webdataset) or the stack (stream mode); removed when the job ends.
pub const STAGING: &str = ".imgnorm-staging";

/// One output layout. A new format is a file implementing this, a variant
/// of [`OutputFormat`] (with its flag) and a line in [`layout`].
pub trait Layout {
    /// Whether per-image arrays wait in [`STAGING`] until the job ends
    /// (else they are written in their final place).
    fn staged(&self) -> bool;

    /// Whether the engine writes each image to a `.npy` file of its own
    /// (under [`tree_root`]); `false` for layouts that take a slice of a
    /// file [`Layout::prepare`] preallocated.
    fn per_image_files(&self) -> bool {
        true
    }

    /// Sets up the layout under `out` for a job of `files` files before any
    /// image is processed (after the staging folder is created, when the
    /// layout is staged).
    fn prepare(
        &self,
        _out: &Path,
        _opts: &EngineOptions,
        _files: usize,
    ) -> Result<(), FormatError> {
        Ok(())
    }

    /// Completes the layout once every file of the job has its record
    /// (`records[i]` for `files[i]`); rewrites the `output` field of `ok`
    /// records to where the array ended up. The staging folder is removed
    /// afterwards.
    fn finish(
        &self,
        out: &Path,
        opts: &EngineOptions,
        files: &[String],
        records: &mut [Record],
    ) -> Result<(), FormatError>;

    /// Whether [`Layout::finish`] reads or rewrites the records (when not,
    /// a job's rows need not be gathered in memory to finish it).
    fn needs_rows(&self) -> bool {
        true
    }
}

/// Whether completing the layout of `opts` needs every row in memory
/// (see [`Layout::needs_rows`]).
pub fn needs_rows(opts: &EngineOptions) -> bool {
    layout(&opts.format).needs_rows()
}

/// The layout of `format`: the registry of output formats.
pub fn layout(format: &OutputFormat) -> Box<dyn Layout> {
    match *format {
        OutputFormat::Npy => Box::new(npy::Npy),
        OutputFormat::Webdataset { shard_size } => Box::new(webdataset::Webdataset { shard_size }),
        OutputFormat::Stack => Box::new(stack::Stack),
    }
}

/// Preparing or completing an output layout failed.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// A file or folder could not be created, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A staged array does not have the stack's slice size.
    #[error("staged array {path} holds {got} bytes of data, the stack slice is {want}")]
    SliceSize {
        /// The staged file.
        path: PathBuf,
        /// Data bytes found.
        got: usize,
        /// Bytes per stack slice.
        want: usize,
    },
    /// `--format stack` without a fixed shape (options not validated).
    #[error("--format stack needs a fixed shape")]
    NoStackShape,
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FormatError + '_ {
    move |source| FormatError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where per-image `.npy` files go for a job writing to `out`: the output
/// itself for unstaged layouts (the `npy` tree), the staging folder
/// otherwise.
pub fn tree_root(out: &Path, format: &OutputFormat) -> PathBuf {
    if layout(format).staged() {
        out.join(STAGING)
    } else {
        out.to_path_buf()
    }
}

/// Creates the folders between `root` and the file `dest` under it. The
/// output folder itself may be created; the staging folder never is: only
/// the job owner creates it (`prepare`) and removes it (`finish`), so a late
/// duplicate writer (a speculative copy still running when the job ended)
/// fails instead of leaving files behind.
pub fn make_parent_dirs(root: &Path, dest: &Path) -> std::io::Result<()> {
    let Some(parent) = dest.parent() else {
        return Ok(());
    };
    if !root.ends_with(STAGING) {
        return std::fs::create_dir_all(parent);
    }
    let Ok(below) = parent.strip_prefix(root) else {
        return Err(std::io::Error::other("output outside the staging folder"));
    };
    if !root.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "staging folder is gone (the job has ended)",
        ));
    }
    let mut dir = root.to_path_buf();
    for part in below.components() {
        dir.push(part);
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Offset of the data in a `.npy` file (version 1.0 header, as ours are).
pub fn npy_data_offset(npy: &[u8]) -> usize {
    if npy.len() < 10 {
        return npy.len();
    }
    (10 + usize::from(u16::from_le_bytes([npy[8], npy[9]]))).min(npy.len())
}

/// Sets up the layout of the output `claim` holds before any image is
/// processed: for staged layouts, removes stale staging left by a killed
/// run and creates it afresh, then lets the layout prepare (the stack
/// preallocates its file). Taking the claim, not a path, is what keeps one
/// job from wiping the staging or truncating the stack of another one still
/// running there.
pub fn prepare(claim: &OutputClaim, opts: &EngineOptions, files: usize) -> Result<(), FormatError> {
    let layout = layout(&opts.format);
    if !layout.staged() {
        return Ok(());
    }
    let out = claim.path();
    let staging = out.join(STAGING);
    match std::fs::remove_dir_all(&staging) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&staging)(e)),
        _ => {}
    }
    std::fs::create_dir(&staging).map_err(io(&staging))?;
    layout.prepare(out, opts, files)
}

/// Completes the layout once every file of the job has its record.
/// `records[i]` is the result for `files[i]` (index order). Rewrites the
/// `output` field of `ok` records to where the array ended up.
pub fn finish(
    out: &Path,
    opts: &EngineOptions,
    files: &[String],
    records: &mut [Record],
) -> Result<(), FormatError> {
    let layout = layout(&opts.format);
    if !layout.staged() {
        return layout.finish(out, opts, files, records);
    }
    layout.finish(out, opts, files, records)?;
    remove_staging(out)
}

/// Moves the staging folder out of the way in one rename (late writers then
/// find no staging folder and fail), then deletes it. A late writer that
/// raced the rename can make the deletion fail once; it is retried.
fn remove_staging(out: &Path) -> Result<(), FormatError> {
    let staging = out.join(STAGING);
    let mut gone = staging.clone().into_os_string();
    gone.push(unique_tmp_suffix());
    let gone = PathBuf::from(gone);
    match std::fs::rename(&staging, &gone) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(&staging)(e)),
        Ok(()) => {}
    }
    let mut result = std::fs::remove_dir_all(&gone);
    for _ in 0..3 {
        if result.is_ok() {
            break;
        }
        result = std::fs::remove_dir_all(&gone);
    }
    result.map_err(io(&gone))
}

/// The class of an input path: its top-level folder, if it has one.
pub fn class_of(rel: &str) -> Option<&str> {
    rel.split_once('/').map(|(c, _)| c)
}

#[cfg(test)]
mod tests {
    use super::stack::npy_file;
    use super::*;

    #[test]
    fn keys_have_no_dot_in_the_last_component_and_stay_distinct() {
        assert_eq!(sample_key("cat/img.1.jpg"), "cat/img%2E1%2Ejpg");
        assert_eq!(sample_key("v1.0/x.png"), "v1.0/x%2Epng");
        assert_eq!(sample_key("a%2Epng"), "a%252Epng");
        assert_ne!(sample_key("a.png"), sample_key("a%2Epng"));
        assert_eq!(sample_key("noext"), "noext");
    }

    #[test]
    fn small_npy_headers_are_aligned() {
        let f = npy_file("<i8", 3, &[0; 24]);
        let offset = npy_data_offset(&f);
        assert_eq!(offset % 64, 0);
        assert_eq!(f.len(), offset + 24);
        assert!(
            std::str::from_utf8(&f[10..offset])
                .unwrap()
                .contains("(3,)")
        );
    }
}
