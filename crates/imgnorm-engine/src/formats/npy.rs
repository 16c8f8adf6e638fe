//! The plain `.npy` tree (`--format npy`, the default): each image's array
//! at `rel.npy` under the output, written in place; nothing to complete.
use std::path::Path;

use imgnorm_core::options::EngineOptions;
use imgnorm_core::record::Record;

use super::{FormatError, Layout};

/// `--format npy`.
pub struct Npy;

impl Layout for Npy {
    fn staged(&self) -> bool {
        false
    }

    fn finish(
        &self,
        _out: &Path,
        _opts: &EngineOptions,
        _files: &[String],
        _records: &mut [Record],
    ) -> Result<(), FormatError> {
        Ok(())
    }

    fn needs_rows(&self) -> bool {
        false
    }
}
