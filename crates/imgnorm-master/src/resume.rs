//! Checking what a killed master left behind before resuming its jobs: a
//! stored `ok` result counts only if its output is still where the job's
//! layout puts it and hashes to the recorded checksum (xxh3-128 of the
//! `.npy` bytes, as the engine computed it). Every other result of the
//! writing phase is dropped, so its image is processed again.
use std::io::Read;
use std::path::Path;

use imgnorm_core::normalize::npy_header;
use imgnorm_core::options::{EngineOptions, OutputFormat};
use imgnorm_core::record::Status;
use xxhash_rust::xxh3::Xxh3;

use super::store::{SavedJob, StoredPhase};
use crate::claim::OutputClaim;
use crate::formats::{self, STACK_PARTIAL, STAGING};
use crate::storage::{self, Location};
use crate::wire::Transfer;

/// What the check found for one job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checked {
    /// Stored results kept (outputs verified, or rows without output).
    pub kept: u64,
    /// Stored `ok` results dropped: output missing or different.
    pub dropped: u64,
}

/// Claims a resumed job's output (creating the folder if it is gone): no
/// other job may use it until this one ends.
pub fn claim_output(out: &Path) -> Result<OutputClaim, String> {
    if !storage::is_object_url(out) {
        std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    OutputClaim::acquire(out).map_err(|e| e.to_string())
}

/// Drops the stored writing-phase results of `job` whose output does not
/// verify; recreates the layout (`--format webdataset|stack`) when the
/// killed master had already taken it apart.
pub fn check_outputs(
    job: &mut SavedJob,
    opts: &EngineOptions,
    transfer: Transfer,
    claim: &OutputClaim,
) -> Result<Checked, String> {
    let out = job.output.clone();
    let mut layout_lost = false;
    if opts.format != OutputFormat::Npy && !storage::is_object_url(&out) {
        let staging = out.join(STAGING);
        let stack_gone = opts.format == OutputFormat::Stack && !out.join(STACK_PARTIAL).is_file();
        if !staging.is_dir() || stack_gone {
            // Killed while completing the layout (or someone removed it):
            // start the layout again; every output is redone.
            formats::prepare(claim, opts, job.files.len()).map_err(|e| e.to_string())?;
            layout_lost = true;
        }
    }
    let remote = if storage::is_object_url(&out) {
        let loc = Location::of(&out).map_err(|e| e.to_string())?;
        let url = loc
            .s3()
            .cloned()
            .ok_or_else(|| format!("{} is not an object-store URL", out.display()))?;
        Some(storage::Store::open(&url).map_err(|e| storage::chain(&e))?)
    } else {
        None
    };
    let mut checked = Checked::default();
    let mut stack: Option<std::fs::File> = None;
    let files = &job.files;
    job.results.retain(|r| {
        let needs_output = r.phase == StoredPhase::Write && r.record.status == Status::Ok;
        if !needs_output {
            checked.kept += 1;
            return true;
        }
        let Some(want) = r.record.checksum.as_deref() else {
            checked.dropped += 1;
            return false;
        };
        let rel = match files.get(r.index as usize) {
            Some(rel) if *rel == r.record.path => rel,
            _ => {
                checked.dropped += 1;
                return false;
            }
        };
        let got = if layout_lost {
            None
        } else if let Some(store) = &remote {
            let (store, key) = (store.clone(), format!("{rel}.npy"));
            storage::block_on(async move { store.get(&key).await })
                .ok()
                .and_then(Result::ok)
                .map(|b| format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&b)))
        } else if opts.format == OutputFormat::Stack && transfer == Transfer::Shared {
            stack_row_hash(&out, opts, r.index, &mut stack)
        } else {
            let path = formats::tree_root(&out, &opts.format).join(format!("{rel}.npy"));
            file_hash(&path)
        };
        if got.as_deref() == Some(want) {
            checked.kept += 1;
            true
        } else {
            checked.dropped += 1;
            false
        }
    });
    Ok(checked)
}

fn file_hash(path: &Path) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut h = Xxh3::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(_) => return None,
        }
    }
    Some(format!("{:032x}", h.digest128()))
}

/// The checksum of stack row `index` as the engine computed it: over the
/// per-image `.npy` (its own header, then the row).
fn stack_row_hash(
    out: &Path,
    opts: &EngineOptions,
    index: u64,
    file: &mut Option<std::fs::File>,
) -> Option<String> {
    use std::os::unix::fs::FileExt;
    let [h, w, c] = opts.stack_shape()?;
    if file.is_none() {
        *file = std::fs::File::open(out.join(STACK_PARTIAL)).ok();
    }
    let f = file.as_ref()?;
    let mut head = [0u8; 10];
    f.read_exact_at(&mut head, 0).ok()?;
    if &head[..6] != b"\x93NUMPY" {
        return None;
    }
    let data = 10 + u64::from(u16::from_le_bytes([head[8], head[9]]));
    let slice = h * w * c * opts.dtype.size();
    let mut row = vec![0u8; slice];
    f.read_exact_at(&mut row, data + index * slice as u64)
        .ok()?;
    let mut x = Xxh3::new();
    x.update(&npy_header(opts.dtype, &opts.layout.shape(h, w, c)));
    x.update(&row);
    Some(format!("{:032x}", x.digest128()))
}
