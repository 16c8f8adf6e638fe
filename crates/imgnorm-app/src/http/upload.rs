//! New datasets from the browser: `POST /api/v1/datasets?name=N` with a
//! multipart body of image files and/or `.zip`/`.tar` archives. Files are
//! streamed into a hidden staging folder under `DATA/datasets`, archives are
//! extracted there (off the async runtime), and the folder is renamed into
//! place only when everything passed, so a dataset appears whole or not at
//! all. Refused: entry names with `..`, absolute or drive paths, backslashes;
//! links, devices and FIFOs; anything over the limits. A zip's central
//! directory is streamed and checked entry by entry (`zipread`), and only
//! [`MAX_CONCURRENT_UPLOADS`] uploads run at once, so an upload's memory is
//! a few buffers whatever its archives declare. Kept: images only
//! (recognised by their first bytes, not their names).
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use axum::Json;
use axum::extract::multipart::MultipartError;
use axum::extract::{Multipart, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;

/// Uploads a master takes at once; more are answered 429 (each streams to
/// disk with a few buffers, but extraction is disk- and CPU-bound).
pub const MAX_CONCURRENT_UPLOADS: usize = 2;

/// Upload limits (`--upload-max-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    /// Bytes in one upload: the request body, and again the extracted files.
    pub max_total: u64,
    /// Files kept plus entries looked at in archives.
    pub max_files: u64,
    /// Bytes of one file (uploaded or extracted).
    pub max_file: u64,
}

impl Default for UploadLimits {
    fn default() -> Self {
        UploadLimits {
            max_total: 1 << 30,
            max_files: 10_000,
            max_file: 64 << 20,
        }
    }
}

/// Query of `POST /api/v1/datasets`.
#[derive(Debug, Deserialize)]
pub struct UploadQuery {
    /// Name of the new dataset.
    pub name: String,
}

/// What an upload produced.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct UploadReport {
    /// Dataset name.
    pub name: String,
    /// Images kept.
    pub images: u64,
    /// Their total size.
    pub bytes: u64,
    /// Files and entries that were not images (first 50).
    pub skipped: Vec<String>,
    /// How many were not images.
    pub skipped_total: u64,
}

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64)
}

/// Validates a dataset name: 1–64 of `A-Z a-z 0-9 . _ -`, not starting with
/// a dot.
pub fn dataset_name(s: &str) -> Result<String, ApiError> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid dataset name {s:?}: use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'"
        )))
    }
}

/// A relative path from an upload or archive entry name, refusing anything
/// that could land outside the dataset: `..`, absolute paths, drive letters,
/// backslashes, NUL, empty names; and names no worker could store: control
/// characters, more than 4096 bytes, a component over 255 bytes.
pub fn safe_relative(name: &str) -> Result<PathBuf, ApiError> {
    let refuse = |why: &str| {
        Err(ApiError::BadRequest(format!(
            "refused entry {name:?}: {why}"
        )))
    };
    if name.is_empty() {
        return refuse("empty name");
    }
    if name.contains('\\') || name.contains('\0') {
        return refuse("backslash or NUL in the name");
    }
    if name.chars().any(char::is_control) {
        return refuse("control character in the name");
    }
    if name.len() > imgnorm_core::paths::MAX_PATH_BYTES {
        return refuse("name longer than 4096 bytes");
    }
    if name
        .split('/')
        .any(|c| c.len() > imgnorm_core::paths::MAX_COMPONENT_BYTES)
    {
        return refuse("a path component longer than 255 bytes");
    }
    if name.starts_with('/') {
        return refuse("absolute path");
    }
    let mut out = PathBuf::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(p) => {
                if p.to_str().is_some_and(|s| s.contains(':')) {
                    return refuse("':' in a path component (drive letters are not allowed)");
                }
                out.push(p)
            }
            Component::CurDir => {}
            Component::ParentDir => return refuse("'..' in the path"),
            Component::RootDir | Component::Prefix(_) => return refuse("absolute path"),
        }
    }
    if out.as_os_str().is_empty() {
        return refuse("empty name");
    }
    Ok(out)
}

/// True when `head` (a file's first bytes) is an image format the engine
/// decodes.
pub fn is_image(head: &[u8]) -> bool {
    use image::ImageFormat as F;
    matches!(
        image::guess_format(head),
        Ok(F::Jpeg | F::Png | F::Bmp | F::Tiff | F::WebP | F::Gif)
    )
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Zip,
    Tar,
    File,
}

fn kind_of(name: &str) -> Result<Kind, ApiError> {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".zip") {
        Ok(Kind::Zip)
    } else if lower.ends_with(".tar") {
        Ok(Kind::Tar)
    } else if [
        ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar.zst", ".7z", ".rar",
    ]
    .iter()
    .any(|e| lower.ends_with(e))
    {
        Err(ApiError::BadRequest(format!(
            "{name}: this archive format is not supported; upload a .zip or an uncompressed .tar"
        )))
    } else {
        Ok(Kind::File)
    }
}

/// Running totals of one upload, checked against the limits.
struct Budget {
    limits: UploadLimits,
    files: u64,
    bytes: u64,
    images: u64,
    skipped: Vec<String>,
    skipped_total: u64,
}

impl Budget {
    fn entry(&mut self) -> Result<(), ApiError> {
        self.files += 1;
        if self.files > self.limits.max_files {
            return Err(ApiError::TooLarge(format!(
                "too many files: the limit is {} per upload (archive entries included)",
                self.limits.max_files
            )));
        }
        Ok(())
    }

    fn add(&mut self, name: &str, n: u64, file_so_far: u64) -> Result<(), ApiError> {
        if file_so_far > self.limits.max_file {
            return Err(ApiError::TooLarge(format!(
                "{name} is larger than the per-file limit of {}",
                mib(self.limits.max_file)
            )));
        }
        self.bytes += n;
        if self.bytes > self.limits.max_total {
            return Err(ApiError::TooLarge(format!(
                "the upload is larger than the total limit of {}",
                mib(self.limits.max_total)
            )));
        }
        Ok(())
    }

    fn skip(&mut self, name: &str) {
        self.skipped_total += 1;
        if self.skipped.len() < 50 {
            self.skipped.push(name.to_string());
        }
    }
}

/// Removes the staging folder when the upload ends, committed or not (a
/// committed dataset has already been renamed out of it).
struct Staging {
    dir: PathBuf,
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn create_new(path: &Path, name: &str) -> Result<File, ApiError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(ApiError::io(format!("creating a folder for {name}")))?;
    }
    File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => ApiError::Conflict(format!(
                "{name}: two files with the same path in one upload"
            )),
            // A file where a folder is needed, or the reverse.
            std::io::ErrorKind::NotADirectory | std::io::ErrorKind::IsADirectory => {
                ApiError::Conflict(format!("{name}: clashes with another file of the upload"))
            }
            _ => ApiError::io(format!("writing {name}"))(e),
        })
}

/// Copies one archive entry into the staging folder if it is an image.
fn extract_entry(
    r: &mut dyn Read,
    name: &str,
    rel: &Path,
    staging: &Path,
    budget: &mut Budget,
) -> Result<(), ApiError> {
    budget.entry()?;
    let mut head = [0u8; 32];
    let mut n = 0;
    while n < head.len() {
        let k = r.read(&mut head[n..]).map_err(|e| bad_archive(name, e))?;
        if k == 0 {
            break;
        }
        n += k;
    }
    if !is_image(&head[..n]) {
        budget.skip(name);
        return Ok(());
    }
    let path = staging.join(rel);
    let mut f = create_new(&path, name)?;
    f.write_all(&head[..n])
        .map_err(ApiError::io(format!("writing {name}")))?;
    let mut total = n as u64;
    budget.add(name, n as u64, total)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let k = r.read(&mut buf).map_err(|e| bad_archive(name, e))?;
        if k == 0 {
            break;
        }
        total += k as u64;
        budget.add(name, k as u64, total)?;
        f.write_all(&buf[..k])
            .map_err(ApiError::io(format!("writing {name}")))?;
    }
    budget.images += 1;
    Ok(())
}

fn bad_archive(name: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(format!("{name}: cannot read the archive: {e}"))
}

/// Unix file-type bits of a zip entry, when the archive recorded them.
const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;

/// Extracts the images of a zip archive into `staging`, reading its
/// central directory one entry at a time ([`super::zipread`]): the entry
/// count, names, types and sizes are checked as each entry is read, so an
/// archive of millions of entries is refused after the first one over the
/// limit with a few buffers in memory.
fn extract_zip(
    archive: &Path,
    label: &str,
    staging: &Path,
    budget: &mut Budget,
) -> Result<(), ApiError> {
    use super::zipread::{self, ZipError};
    let from_zip = |e: ZipError| match e {
        ZipError::Io(e) => ApiError::io(format!("reading {label}"))(e),
        ZipError::Invalid(e) => {
            ApiError::BadRequest(format!("{label} is not a valid zip archive: {e}"))
        }
        ZipError::Unsupported(e) => bad_archive(label, e),
    };
    let (max_files, seen) = (budget.limits.max_files, budget.files);
    let before = |dir: &zipread::Directory| {
        if seen.saturating_add(dir.declared) > max_files {
            return Err(Walk::Api(ApiError::TooLarge(format!(
                "too many files: {label} declares {} entries, the limit is {max_files} per upload (archive entries included)",
                dir.declared
            ))));
        }
        Ok(())
    };
    let each = |e: &zipread::Entry, r: Option<&mut dyn Read>| -> Result<(), Walk> {
        let rel = safe_relative(e.name.trim_end_matches('/'))?;
        let ftype = e.unix_mode.map(|m| m & S_IFMT).unwrap_or(0);
        if !(ftype == 0 || ftype == S_IFREG || ftype == S_IFDIR) {
            return Err(Walk::Api(ApiError::BadRequest(format!(
                "{label}: refused entry {:?}: links and special files are not allowed",
                e.name
            ))));
        }
        let Some(r) = r else {
            budget.entry()?;
            return Ok(());
        };
        if e.size > budget.limits.max_file {
            return Err(Walk::Api(ApiError::TooLarge(format!(
                "{label}: {} is larger than the per-file limit of {}",
                e.name,
                mib(budget.limits.max_file)
            ))));
        }
        extract_entry(r, &e.name, &rel, staging, budget)?;
        Ok(())
    };
    zipread::for_each_entry(archive, before, each).map_err(|w| match w {
        Walk::Api(e) => e,
        Walk::Zip(e) => from_zip(e),
    })
}

/// An error while walking a zip: the upload's own, or the archive's.
enum Walk {
    Api(ApiError),
    Zip(super::zipread::ZipError),
}

impl From<super::zipread::ZipError> for Walk {
    fn from(e: super::zipread::ZipError) -> Walk {
        Walk::Zip(e)
    }
}

impl From<ApiError> for Walk {
    fn from(e: ApiError) -> Walk {
        Walk::Api(e)
    }
}

/// Extracts the images of a tar archive into `staging`.
fn extract_tar(
    archive: &Path,
    label: &str,
    staging: &Path,
    budget: &mut Budget,
) -> Result<(), ApiError> {
    use tar::EntryType as T;
    let f = File::open(archive).map_err(ApiError::io(format!("reading {label}")))?;
    let mut ar = tar::Archive::new(std::io::BufReader::new(f));
    let entries = ar
        .entries()
        .map_err(|e| ApiError::BadRequest(format!("{label} is not a valid tar archive: {e}")))?;
    let mut seen = 0;
    for e in entries {
        let mut e = e.map_err(|e| {
            ApiError::BadRequest(format!("{label} is not a valid tar archive: {e}"))
        })?;
        seen += 1;
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let rel = safe_relative(name.trim_end_matches('/'))?;
        match e.header().entry_type() {
            T::Regular | T::Continuous => {}
            T::Directory => continue,
            other => {
                return Err(ApiError::BadRequest(format!(
                    "{label}: refused entry {name:?}: {other:?} entries (links, devices, FIFOs) are not allowed"
                )));
            }
        }
        if e.header().size().unwrap_or(0) > budget.limits.max_file {
            return Err(ApiError::TooLarge(format!(
                "{label}: {name} is larger than the per-file limit of {}",
                mib(budget.limits.max_file)
            )));
        }
        extract_entry(&mut e, &name, &rel, staging, budget)?;
    }
    if seen == 0 {
        let len = std::fs::metadata(archive).map(|m| m.len()).unwrap_or(0);
        if len > 0 && len < 512 {
            return Err(ApiError::BadRequest(format!(
                "{label} is not a valid tar archive"
            )));
        }
    }
    Ok(())
}

fn multipart_error(e: MultipartError) -> ApiError {
    let text = e.body_text();
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge(format!(
            "the upload is larger than the total limit ({text})"
        ))
    } else {
        ApiError::BadRequest(format!("malformed upload: {text}"))
    }
}

/// `POST /api/v1/datasets?name=N`: see the module docs.
pub async fn upload(
    State(s): State<AppState>,
    q: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    mp: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<(StatusCode, Json<UploadReport>), ApiError> {
    let Query(q) = q.map_err(|_| {
        ApiError::BadRequest("the dataset name is missing: POST /api/v1/datasets?name=NAME".into())
    })?;
    let mut mp = mp.map_err(|e| {
        ApiError::BadRequest(format!("expected multipart/form-data: {}", e.body_text()))
    })?;
    let name = dataset_name(&q.name)?;
    let Some(_slot) = s.upload_slot() else {
        return Err(ApiError::Busy(format!(
            "{MAX_CONCURRENT_UPLOADS} uploads are in progress; try again when one is done"
        )));
    };
    let root = s.datasets_dir();
    let target = root.join(&name);
    if std::fs::symlink_metadata(&target).is_ok() {
        return Err(ApiError::Conflict(format!(
            "dataset {name:?} already exists"
        )));
    }
    let limits = s.config().limits;
    let dir = root.join(format!(
        ".upload-{name}-{}",
        super::generate_token().map_err(|e| ApiError::BadRequest(e.to_string()))?
    ));
    let staging = Staging { dir };
    let files_dir = staging.dir.join("files");
    let archives_dir = staging.dir.join("archives");
    for d in [&files_dir, &archives_dir] {
        tokio::fs::create_dir_all(d)
            .await
            .map_err(ApiError::io("creating the upload folder"))?;
    }
    let mut budget = Budget {
        limits,
        files: 0,
        bytes: 0,
        images: 0,
        skipped: Vec::new(),
        skipped_total: 0,
    };
    let mut archives: Vec<(PathBuf, String, Kind)> = Vec::new();
    let mut fields = 0u64;
    while let Some(mut field) = mp.next_field().await.map_err(multipart_error)? {
        let Some(fname) = field.file_name().map(str::to_string) else {
            return Err(ApiError::BadRequest(format!(
                "unexpected form field {:?}: send files only (the name goes in ?name=)",
                field.name().unwrap_or("")
            )));
        };
        fields += 1;
        if fname.is_empty() {
            // A file input left empty by the browser.
            while field.chunk().await.map_err(multipart_error)?.is_some() {}
            continue;
        }
        let kind = kind_of(&fname)?;
        let (path, rel) = match kind {
            Kind::File => {
                budget.entry()?;
                let rel = safe_relative(&fname)?;
                (files_dir.join(&rel), Some(rel))
            }
            Kind::Zip | Kind::Tar => (archives_dir.join(format!("{}", archives.len())), None),
        };
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(ApiError::io(format!("creating a folder for {fname}")))?;
        }
        let mut out = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => ApiError::Conflict(format!(
                    "{fname}: two files with the same path in one upload"
                )),
                _ => ApiError::io(format!("writing {fname}"))(e),
            })?;
        let mut head: Vec<u8> = Vec::new();
        let mut size = 0u64;
        while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
            size += chunk.len() as u64;
            if kind == Kind::File {
                budget.add(&fname, chunk.len() as u64, size)?;
            } else if size > limits.max_total {
                return Err(ApiError::TooLarge(format!(
                    "{fname} is larger than the total limit of {}",
                    mib(limits.max_total)
                )));
            }
            if head.len() < 32 {
                head.extend_from_slice(&chunk[..chunk.len().min(32 - head.len())]);
            }
            tokio::io::AsyncWriteExt::write_all(&mut out, &chunk)
                .await
                .map_err(ApiError::io(format!("writing {fname}")))?;
        }
        tokio::io::AsyncWriteExt::flush(&mut out)
            .await
            .map_err(ApiError::io(format!("writing {fname}")))?;
        drop(out);
        match kind {
            Kind::File => {
                if is_image(&head) {
                    budget.images += 1;
                } else {
                    budget.bytes -= size;
                    budget.skip(&rel.map(|r| r.display().to_string()).unwrap_or(fname));
                    tokio::fs::remove_file(&path)
                        .await
                        .map_err(ApiError::io("removing a skipped file"))?;
                }
            }
            Kind::Zip | Kind::Tar => archives.push((path, fname, kind)),
        }
    }
    if fields == 0 {
        return Err(ApiError::BadRequest(
            "empty upload: choose image files or a .zip/.tar archive".into(),
        ));
    }
    // Extraction reads and writes files: off the async runtime.
    let files = files_dir.clone();
    let (budget, staging) = tokio::task::spawn_blocking(move || {
        let mut budget = budget;
        for (path, label, kind) in &archives {
            match kind {
                Kind::Zip => extract_zip(path, label, &files, &mut budget)?,
                Kind::Tar => extract_tar(path, label, &files, &mut budget)?,
                Kind::File => {}
            }
        }
        if budget.images == 0 {
            return Err(ApiError::BadRequest(format!(
                "the upload contains no images ({} other files skipped)",
                budget.skipped_total
            )));
        }
        std::fs::rename(&files, &target).map_err(|e| {
            if target.exists() {
                ApiError::Conflict(format!("dataset {:?} already exists", target.file_name()))
            } else {
                ApiError::io("moving the dataset into place")(e)
            }
        })?;
        Ok::<_, ApiError>((budget, staging))
    })
    .await
    .map_err(|e| ApiError::BadRequest(format!("extraction failed: {e}")))??;
    // The staging folder (now holding only the archives) is removed on drop.
    drop(staging);
    tracing::info!(dataset = %name, images = budget.images, "dataset uploaded");
    Ok((
        StatusCode::CREATED,
        Json(UploadReport {
            name,
            images: budget.images,
            bytes: budget.bytes,
            skipped: budget.skipped,
            skipped_total: budget.skipped_total,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_escape_are_refused() {
        for bad in [
            "../x.png",
            "a/../../x.png",
            "/etc/passwd",
            "a\\..\\x.png",
            "",
            "C:/x.png",
            "c:x.png",
            "a/\0.png",
            ".",
            "a\nb.png",
            "tab\t.png",
            "\u{7f}.png",
            &format!("{}.png", "x".repeat(256)),
            &"a/".repeat(2100),
        ] {
            assert!(safe_relative(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            safe_relative("a/./b/x.png").ok(),
            Some(PathBuf::from("a/b/x.png"))
        );
        assert_eq!(safe_relative("x.png").ok(), Some(PathBuf::from("x.png")));
    }

    #[test]
    fn dataset_names() {
        assert!(dataset_name("cats-2024_v1.0").is_ok());
        for bad in ["", ".hidden", "a/b", "..", "a b", &"x".repeat(65)] {
            assert!(dataset_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn images_are_recognised_by_content() {
        assert!(is_image(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"));
        assert!(is_image(b"\xff\xd8\xff\xe0\0\x10JFIF\0"));
        assert!(!is_image(b"hello world, not an image"));
        assert!(!is_image(b""));
    }
}
