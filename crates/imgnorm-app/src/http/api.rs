//! JSON handlers of `/api/v1` (jobs, one job, cancel, workers, datasets,
//! start a job) and the server-sent event stream that pushes the same views
//! to open pages. Errors are one JSON shape: `{"error": "..."}`.
use std::convert::Infallible;
use std::path::PathBuf;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
pub use super::error::ApiError;
use crate::args::{
    ChannelsArg, DtypeArg, EngineArgs, FilterArg, FormatArg, LayoutArgs, OrientationArg, ScopeArg,
};
use crate::master::state::JobState;
use crate::master::view::{JobDetailView, JobSummaryView, WorkerDashView};
use crate::wire::Transfer;

/// A job summary plus the dataset it came from, when it is one of ours.
#[derive(Debug, Serialize)]
pub struct JobItem {
    /// The summary.
    #[serde(flatten)]
    pub job: JobSummaryView,
    /// Dataset name when the input is `DATA/datasets/<name>`.
    pub dataset: Option<String>,
    /// True when the output lies in the data directory (downloadable).
    pub downloadable: bool,
}

/// One job in detail, plus what the dashboard adds.
#[derive(Debug, Serialize)]
pub struct JobDetail {
    /// The master's view.
    #[serde(flatten)]
    pub job: JobDetailView,
    /// Dataset name when the input is one of ours.
    pub dataset: Option<String>,
    /// True when the output lies in the data directory (downloadable).
    pub downloadable: bool,
    /// The "dataset" section of `stats.json` once the job is done.
    pub stats: Option<Value>,
}

/// Everything the jobs and workers pages show.
#[derive(Debug, Serialize)]
pub struct Overview {
    /// Every job, newest first.
    pub jobs: Vec<JobItem>,
    /// Every worker ever seen.
    pub workers: Vec<WorkerDashView>,
    /// The autoscaler, when the master runs one (`--autoscale`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<crate::autoscale::AutoscaleView>,
}

fn dataset_of(s: &AppState, input: &str) -> Option<String> {
    let p = PathBuf::from(input);
    (p.parent()? == s.datasets_dir())
        .then(|| p.file_name()?.to_str().map(str::to_string))
        .flatten()
}

fn downloadable(s: &AppState, output: &str) -> bool {
    s.inside(std::path::Path::new(output)).is_some()
}

fn item(s: &AppState, job: JobSummaryView) -> JobItem {
    JobItem {
        dataset: dataset_of(s, &job.input),
        downloadable: downloadable(s, &job.output),
        job,
    }
}

fn overview_of(s: &AppState) -> Overview {
    let mut jobs: Vec<JobItem> = s
        .master()
        .jobs_view()
        .into_iter()
        .map(|j| item(s, j))
        .collect();
    jobs.reverse();
    Overview {
        jobs,
        workers: s.master().workers_view(),
        autoscale: s.master().autoscale_view(),
    }
}

fn detail_of(s: &AppState, id: &str) -> Option<JobDetail> {
    let job = s.master().job_view(id)?;
    let stats = (job.summary.state == JobState::Done)
        .then(|| dataset_stats(s, id, &job.summary.output))
        .flatten();
    Some(JobDetail {
        dataset: dataset_of(s, &job.summary.input),
        downloadable: downloadable(s, &job.summary.output),
        stats,
        job,
    })
}

/// The "dataset" section of a finished job's `stats.json`, if the output is
/// inside the data directory; cached (a finished job's file does not change).
fn dataset_stats(s: &AppState, id: &str, output: &str) -> Option<Value> {
    if let Some(v) = s.inner.stats.lock().ok()?.get(id) {
        return Some(v.clone());
    }
    let dir = s.inside(std::path::Path::new(output))?;
    let text = std::fs::read_to_string(dir.join(crate::output::STATS)).ok()?;
    let mut v: Value = serde_json::from_str(&text).ok()?;
    let section = v.get_mut("dataset")?.take();
    s.inner
        .stats
        .lock()
        .ok()?
        .insert(id.to_string(), section.clone());
    Some(section)
}

/// `GET /api/v1/overview`: jobs and workers.
pub async fn overview(State(s): State<AppState>) -> Json<Overview> {
    Json(overview_of(&s))
}

/// `GET /api/v1/jobs`: every job, newest first.
pub async fn jobs(State(s): State<AppState>) -> Json<Vec<JobItem>> {
    Json(overview_of(&s).jobs)
}

/// `GET /api/v1/jobs/{id}`.
pub async fn job(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobDetail>, ApiError> {
    detail_of(&s, &id)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no job {id:?}")))
}

/// `POST /api/v1/jobs/{id}/cancel`.
pub async fn cancel(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let Some(job) = s.master().job_view(&id) else {
        return Err(ApiError::NotFound(format!("no job {id:?}")));
    };
    if !s.master().cancel(&imgnorm_core::ids::JobId(id.clone())) {
        return Err(ApiError::Conflict(if job.summary.state.is_final() {
            format!(
                "job {id} is {} and cannot be cancelled",
                job.summary.state.as_str()
            )
        } else {
            format!(
                "job {id} has every image done and is writing its dataset: it can no longer be cancelled"
            )
        }));
    }
    Ok(Json(json!({ "id": id, "state": "cancelled" })))
}

/// `GET /api/v1/workers`.
pub async fn workers(State(s): State<AppState>) -> Json<Vec<WorkerDashView>> {
    Json(s.master().workers_view())
}

/// A dataset folder under `DATA/datasets`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Dataset {
    /// Folder name.
    pub name: String,
    /// Regular files in it (any depth; links are not followed).
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
}

/// Lists `DATA/datasets` (folders only; links and hidden entries ignored).
pub fn list_datasets(s: &AppState) -> Result<Vec<Dataset>, ApiError> {
    let dir = s.datasets_dir();
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).map_err(ApiError::io("listing datasets"))? {
        let e = e.map_err(ApiError::io("listing datasets"))?;
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if name.starts_with('.') || !is_dir {
            continue;
        }
        let (mut files, mut bytes) = (0, 0);
        for f in walkdir::WalkDir::new(e.path()).follow_links(false) {
            let Ok(f) = f else { continue };
            if f.file_type().is_file() {
                files += 1;
                bytes += f.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
        out.push(Dataset { name, files, bytes });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// `GET /api/v1/datasets`.
pub async fn datasets(State(s): State<AppState>) -> Result<Json<Vec<Dataset>>, ApiError> {
    let s2 = s.clone();
    tokio::task::spawn_blocking(move || list_datasets(&s2))
        .await
        .map_err(|e| ApiError::BadRequest(format!("listing failed: {e}")))?
        .map(Json)
}

/// `POST /api/v1/jobs` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartJob {
    /// Dataset folder name under `DATA/datasets`.
    pub dataset: String,
    /// image | channel | dataset | full.
    pub scope: Option<String>,
    /// With scope dataset: one min/max per channel.
    #[serde(default)]
    pub per_channel: bool,
    /// Z-score per channel after the min-max stage (dataset mean/std unless
    /// `mean` and `std` are given).
    #[serde(default)]
    pub standardize: bool,
    /// Per-channel means for standardize.
    pub mean: Option<Vec<f64>>,
    /// Per-channel standard deviations for standardize.
    pub std: Option<Vec<f64>>,
    /// `[a, b]`.
    pub range: Option<(f64, f64)>,
    /// f32 | f16 | u8 | u16.
    pub dtype: Option<String>,
    /// keep | rgb | gray.
    pub channels: Option<String>,
    /// ignore | apply.
    pub exif_orientation: Option<String>,
    /// npy | webdataset | stack.
    pub format: Option<String>,
}

fn pick<T: ValueEnum>(v: &Option<String>, what: &str, default: T) -> Result<T, ApiError> {
    match v {
        None => Ok(default),
        Some(s) => T::from_str(s, true).map_err(|_| {
            let allowed: Vec<String> = T::value_variants()
                .iter()
                .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
                .collect();
            ApiError::BadRequest(format!(
                "{what} must be one of {}, not {s:?}",
                allowed.join(", ")
            ))
        }),
    }
}

/// `POST /api/v1/jobs`: normalizes a dataset into a new `DATA/jobs/<dataset>-<n>`.
pub async fn start_job(
    State(s): State<AppState>,
    req: Result<Json<StartJob>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(req) =
        req.map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {}", e.body_text())))?;
    let name = super::upload::dataset_name(&req.dataset)?;
    let args = EngineArgs {
        scope: match &req.scope {
            None => None,
            Some(_) => Some(pick(&req.scope, "scope", ScopeArg::Image)?),
        },
        per_channel: req.per_channel,
        standardize: req.standardize,
        mean: req.mean.clone().map(crate::args::Floats),
        std: req.std.clone().map(crate::args::Floats),
        range: req.range,
        dtype: pick(&req.dtype, "dtype", DtypeArg::F32)?,
        channels: pick(&req.channels, "channels", ChannelsArg::Keep)?,
        exif_orientation: pick(
            &req.exif_orientation,
            "exif_orientation",
            OrientationArg::Ignore,
        )?,
        max_pixels: imgnorm_core::options::DEFAULT_MAX_PIXELS,
        max_input_bytes: imgnorm_core::options::DEFAULT_MAX_INPUT_BYTES,
        allow_truncated: false,
        dry_run: false,
        stats_from: None,
        layout: LayoutArgs {
            resize: None,
            resize_shorter: None,
            fit: None,
            center_crop: None,
            filter: FilterArg::Bilinear,
            format: pick(&req.format, "format", FormatArg::Npy)?,
            layout: crate::args::LayoutArg::Hwc,
            shard_size: imgnorm_core::options::DEFAULT_SHARD_SIZE,
        },
    };
    let options = args
        .to_options()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let input = s.datasets_dir().join(&name);
    if !std::fs::symlink_metadata(&input).is_ok_and(|m| m.is_dir()) {
        return Err(ApiError::NotFound(format!("no dataset {name:?}")));
    }
    let jobs = s.jobs_dir();
    let output = tokio::task::spawn_blocking(move || {
        // Claim a fresh folder atomically: create_dir fails if it exists.
        let mut n = 1u64;
        loop {
            let p = jobs.join(format!("{name}-{n}"));
            match std::fs::create_dir(&p) {
                Ok(()) => return Ok(p),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                Err(e) => return Err(ApiError::io(format!("creating {}", p.display()))(e)),
            }
        }
    })
    .await
    .map_err(|e| ApiError::BadRequest(format!("creating the output failed: {e}")))??;
    let (id, total) = s
        .master()
        .submit(input, None, output.clone(), Transfer::Shared, options)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id.0, "images": total, "output": output.display().to_string() })),
    ))
}

/// `GET /api/v1/events` query.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// Also push this job's detail.
    pub job: Option<String>,
}

/// What one event carries: the whole view, so a page opened or reconnected
/// at any time is correct from its first event.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    /// Jobs and workers.
    #[serde(flatten)]
    pub overview: Overview,
    /// The requested job's detail.
    pub job: Option<JobDetail>,
}

/// How often an event stream re-checks the views.
pub const EVENT_PERIOD: Duration = Duration::from_millis(500);

/// `GET /api/v1/events[?job=ID]`: server-sent events named `snapshot`, one
/// on connect and one whenever the view changed (checked every 500 ms).
pub async fn events(State(s): State<AppState>, Query(q): Query<EventsQuery>) -> impl IntoResponse {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(2);
    let mut stop = s.stop_signal();
    tokio::spawn(async move {
        let mut last = String::new();
        let mut t = tokio::time::interval(EVENT_PERIOD);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = t.tick() => {}
                _ = stop.wait_for(|v| *v) => break,
                _ = tx.closed() => break,
            }
            let snap = Snapshot {
                overview: overview_of(&s),
                job: q.job.as_deref().and_then(|id| detail_of(&s, id)),
            };
            let Ok(text) = serde_json::to_string(&snap) else {
                break;
            };
            if text == last {
                continue;
            }
            if tx
                .send(Ok(Event::default().event("snapshot").data(text.as_str())))
                .await
                .is_err()
            {
                break;
            }
            last = text;
        }
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(rx)).keep_alive(KeepAlive::default())
}
