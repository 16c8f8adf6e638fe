//! `--format webdataset`: per-image arrays staged, then packed in index
//! order into tar shards of `shard_size` samples, each sample a `.npy`, (in
//! a class folder) a `.cls` and a `.json` member, byte-identical across
//! runs.
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};

use imgnorm_core::options::EngineOptions;
use imgnorm_core::record::{Record, Status};
use serde::Serialize;

use super::{FormatError, Layout, STAGING, class_of, io};
use crate::fsio::unique_tmp_suffix;

/// `--format webdataset`.
pub struct Webdataset {
    /// Samples per shard.
    pub shard_size: u64,
}

impl Layout for Webdataset {
    fn staged(&self) -> bool {
        true
    }

    fn finish(
        &self,
        out: &Path,
        opts: &EngineOptions,
        _files: &[String],
        records: &mut [Record],
    ) -> Result<(), FormatError> {
        write_shards(out, opts, self.shard_size, records)
    }
}

/// Name of shard number `n`.
pub fn shard_name(n: u64) -> String {
    format!("shard-{n:06}.tar")
}

/// The webdataset key of an input path: the path with, in its last
/// component only, `%` written `%25` and `.` written `%2E`. The webdataset
/// library splits a member name at the first dot of its last component, so
/// the key must have none there; the escape keeps keys distinct.
pub fn sample_key(rel: &str) -> String {
    let (dir, base) = match rel.rfind('/') {
        Some(i) => rel.split_at(i + 1),
        None => ("", rel),
    };
    let mut key = String::with_capacity(rel.len() + 8);
    key.push_str(dir);
    for ch in base.chars() {
        match ch {
            '%' => key.push_str("%25"),
            '.' => key.push_str("%2E"),
            c => key.push(c),
        }
    }
    key
}

/// The `<key>.json` of a webdataset sample.
#[derive(Serialize)]
struct SampleMeta<'a> {
    path: &'a str,
    shape: [u32; 3],
    dtype: &'static str,
    class: Option<&'a str>,
    #[serde(serialize_with = "imgnorm_core::sample::serialize_values")]
    min: &'a [f64],
    #[serde(serialize_with = "imgnorm_core::sample::serialize_values")]
    max: &'a [f64],
    checksum: Option<&'a str>,
}

/// Shards of `shard_size` ok samples each, in index order, each written to a
/// temporary name and renamed; tar headers carry no time, owner or host data
/// (mtime 0, uid/gid 0, mode 0644), so shards are byte-identical across runs.
fn write_shards(
    out: &Path,
    opts: &EngineOptions,
    shard_size: u64,
    records: &mut [Record],
) -> Result<(), FormatError> {
    let staging = out.join(STAGING);
    // The ImageFolder numbering of `--format stack`'s labels: the index of
    // the class folder among the sorted classes of the files not skipped.
    let classes: Vec<String> = match &opts.classes {
        Some(given) => given.clone(),
        None => records
            .iter()
            .filter(|r| r.status != Status::Skipped)
            .filter_map(|r| class_of(&r.path))
            .collect::<BTreeSet<&str>>()
            .into_iter()
            .map(str::to_string)
            .collect(),
    };
    let mut open: Option<(tar::Builder<BufWriter<File>>, PathBuf, PathBuf)> = None;
    let mut done = 0u64;
    let mut npy = Vec::new();
    for r in records.iter_mut().filter(|r| r.status == Status::Ok) {
        if done.is_multiple_of(shard_size) {
            if let Some(shard) = open.take() {
                close_shard(shard)?;
            }
            let dest = out.join(shard_name(done / shard_size));
            let mut tmp = dest.clone().into_os_string();
            tmp.push(unique_tmp_suffix());
            let tmp = PathBuf::from(tmp);
            let f = File::create(&tmp).map_err(io(&tmp))?;
            open = Some((tar::Builder::new(BufWriter::new(f)), tmp, dest));
        }
        let Some((builder, tmp, _)) = open.as_mut() else {
            continue;
        };
        let src = staging.join(format!("{}.npy", r.path));
        npy.clear();
        File::open(&src)
            .and_then(|mut f| f.read_to_end(&mut npy))
            .map_err(io(&src))?;
        let key = sample_key(&r.path);
        let meta = SampleMeta {
            path: &r.path,
            shape: opts
                .layout
                .shape(
                    r.height.unwrap_or(0) as usize,
                    r.width.unwrap_or(0) as usize,
                    r.channels.unwrap_or(0) as usize,
                )
                .map(|v| v as u32),
            dtype: opts.dtype.descr(),
            class: class_of(&r.path),
            min: &r.min,
            max: &r.max,
            checksum: r.checksum.as_deref(),
        };
        let json = serde_json::to_vec(&meta).unwrap_or_default();
        append(builder, &format!("{key}.npy"), &npy).map_err(io(tmp))?;
        if let Some(label) = class_of(&r.path).and_then(|c| classes.iter().position(|x| x == c)) {
            append(builder, &format!("{key}.cls"), label.to_string().as_bytes())
                .map_err(io(tmp))?;
        }
        append(builder, &format!("{key}.json"), &json).map_err(io(tmp))?;
        r.output = Some(shard_name(done / shard_size));
        done += 1;
    }
    if let Some(shard) = open.take() {
        close_shard(shard)?;
    }
    Ok(())
}

fn append(b: &mut tar::Builder<BufWriter<File>>, name: &str, data: &[u8]) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    b.append_data(&mut h, name, data)
}

fn close_shard(
    (builder, tmp, dest): (tar::Builder<BufWriter<File>>, PathBuf, PathBuf),
) -> Result<(), FormatError> {
    let result = builder
        .into_inner()
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .and_then(|f| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &dest));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io(&dest))
}
