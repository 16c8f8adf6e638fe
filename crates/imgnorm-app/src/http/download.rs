//! Results for download: a job's whole output folder as a tar archive built
//! on the fly (a blocking task writes it into a bounded channel that is the
//! response body: nothing is assembled in memory or on disk first), and the
//! manifest alone. Only outputs inside the data directory are served, and
//! links inside them are never followed.
use std::io::{Read, Write};
use std::path::PathBuf;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::AppState;
use super::error::ApiError;

/// Size of the pieces the body is sent in.
const PIECE: usize = 256 * 1024;

/// A `Write` whose bytes become the response body, piece by piece. Blocks
/// (it runs on a blocking thread) when the client reads slowly, so memory
/// stays at a few pieces.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(PIECE)));
        self.tx
            .blocking_send(Ok(piece))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PIECE {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// A body produced by `produce` on a blocking thread. An error ends the
/// body abruptly, so a client never mistakes a cut archive for a whole one.
fn blocking_body<F>(produce: F) -> Body
where
    F: FnOnce(&mut ChannelWriter) -> std::io::Result<()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(PIECE),
        };
        let r = produce(&mut w).and_then(|()| w.flush());
        if let Err(e) = r {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                tracing::warn!(error = %e, "download failed midway");
            }
            let _ = tx.blocking_send(Err(e));
        }
    });
    Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// The output folder of a job, if it is downloadable.
fn output_of(s: &AppState, id: &str) -> Result<PathBuf, ApiError> {
    let job = s
        .master()
        .job_view(id)
        .ok_or_else(|| ApiError::NotFound(format!("no job {id:?}")))?;
    s.inside(std::path::Path::new(&job.summary.output))
        .ok_or_else(|| {
            ApiError::Forbidden(format!(
                "the output of {id} is outside the dashboard's data directory"
            ))
        })
}

/// `GET /api/v1/jobs/{id}/archive`: `<id>.tar` holding `<id>/...`, every
/// regular file of the output folder in sorted order (temporary files of a
/// running job excluded).
pub async fn archive(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let dir = output_of(&s, &id)?;
    let prefix = PathBuf::from(&id);
    let body = blocking_body(move |w| {
        let mut tar = tar::Builder::new(w);
        tar.follow_symlinks(false);
        tar.mode(tar::HeaderMode::Deterministic);
        let walk = walkdir::WalkDir::new(&dir)
            .follow_links(false)
            .sort_by_file_name();
        for e in walk {
            let e = e.map_err(std::io::Error::other)?;
            if !e.file_type().is_file() {
                continue;
            }
            let Ok(rel) = e.path().strip_prefix(&dir) else {
                continue;
            };
            if !in_archive(rel) {
                continue;
            }
            let mut f = std::fs::File::open(e.path())?;
            tar.append_file(prefix.join(rel), &mut f)?;
        }
        tar.finish()
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}.tar\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// Whether a file of an output (`rel`, relative to it) belongs in its
/// archive: not hidden or under a hidden folder (the staging folder), and
/// not a temporary or partial file of a running job (a stream-mode
/// `.part`, a `.tmp` of an atomic write, the stack's `.partial`).
fn in_archive(rel: &std::path::Path) -> bool {
    let hidden = rel
        .components()
        .any(|c| c.as_os_str().to_string_lossy().starts_with('.'));
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let partial = [".tmp", ".part", ".partial"]
        .iter()
        .any(|x| name.ends_with(x));
    !hidden && !partial
}
/// `GET /api/v1/jobs/{id}/manifest`: the job's `manifest.jsonl`.
pub async fn manifest(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let dir = output_of(&s, &id)?;
    let path = dir.join(crate::output::MANIFEST);
    let mut f = std::fs::File::open(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ApiError::NotFound(format!(
            "{id} has no manifest yet (it is written when the job ends)"
        )),
        _ => ApiError::io(format!("reading the manifest of {id}"))(e),
    })?;
    let body = blocking_body(move |w| {
        let mut buf = vec![0u8; PIECE];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            w.write_all(&buf[..n])?;
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}-manifest.jsonl\""),
            ),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::in_archive;
    use std::path::Path;

    #[test]
    fn the_archive_leaves_out_partial_and_staged_files() {
        assert!(in_archive(Path::new("a/b.png.npy")));
        assert!(in_archive(Path::new("manifest.jsonl")));
        assert!(!in_archive(Path::new("a/b.png.npy.4242.17.part")));
        assert!(!in_archive(Path::new(
            "a/b.png.npy.1.0123456789abcdef.0.tmp"
        )));
        assert!(!in_archive(Path::new("images.npy.partial")));
        assert!(!in_archive(Path::new(".imgnorm-staging/a/b.png.npy")));
    }
}
