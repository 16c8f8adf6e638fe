//! The master's web dashboard and its JSON API (`/api/v1`): the router, access
//! control (token, HttpOnly cookie or bearer header), the data directory
//! layout, and the server loop on a bound listener with a shutdown future.
//! Handlers live in `api` (JSON), `pages` (HTML shells and login), `upload`
//! (datasets from files or archives) and `download` (streamed results).
pub mod api;
pub mod download;
pub mod error;
pub mod pages;
pub mod upload;
pub mod zipread;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use tokio::sync::watch;

use crate::master::Master;
pub use upload::UploadLimits;

/// Name of the session cookie set by the login form.
pub const COOKIE: &str = "imgnorm_token";
/// Environment variable read when `--token` is not given.
pub const TOKEN_ENV: &str = "IMGNORM_TOKEN";

/// Dashboard settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Data directory: `datasets/<name>/` and `jobs/<name>/` live here.
    pub data_dir: PathBuf,
    /// Access token every request must carry.
    pub token: String,
    /// Upload limits.
    pub limits: UploadLimits,
}

/// Why the dashboard could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The data directory could not be prepared.
    #[error("cannot prepare data directory {path}: {source}")]
    DataDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No random source for a generated token.
    #[error("cannot generate an access token (reading /dev/urandom): {0}")]
    Random(std::io::Error),
    /// The server failed.
    #[error("dashboard server failed: {0}")]
    Serve(std::io::Error),
}

/// Shared state of every handler (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    master: Master,
    config: HttpConfig,
    /// Canonical data directory (symlinks resolved), for containment checks.
    root: PathBuf,
    /// `stats.json` "dataset" sections of finished jobs, read once.
    stats: Mutex<HashMap<String, serde_json::Value>>,
    /// Flips to true when the server stops, ending event streams.
    stop: watch::Sender<bool>,
    /// Uploads in progress (at most [`upload::MAX_CONCURRENT_UPLOADS`]).
    uploads: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// Prepares the data directory (`datasets/`, `jobs/`) and the state.
    pub fn new(master: Master, mut config: HttpConfig) -> Result<AppState, HttpError> {
        let data = |path: &Path| {
            let p = path.to_path_buf();
            move |source| HttpError::DataDir { path: p, source }
        };
        for sub in ["datasets", "jobs"] {
            let p = config.data_dir.join(sub);
            std::fs::create_dir_all(&p).map_err(data(&p))?;
        }
        let root = config
            .data_dir
            .canonicalize()
            .map_err(data(&config.data_dir))?;
        config.data_dir = root.clone();
        let (stop, _) = watch::channel(false);
        Ok(AppState {
            inner: Arc::new(Inner {
                master,
                config,
                root,
                stats: Mutex::new(HashMap::new()),
                stop,
                uploads: Arc::new(tokio::sync::Semaphore::new(upload::MAX_CONCURRENT_UPLOADS)),
            }),
        })
    }

    /// The master.
    pub fn master(&self) -> &Master {
        &self.inner.master
    }

    /// Settings.
    pub fn config(&self) -> &HttpConfig {
        &self.inner.config
    }

    /// `DATA/datasets`.
    pub fn datasets_dir(&self) -> PathBuf {
        self.inner.root.join("datasets")
    }

    /// `DATA/jobs`.
    pub fn jobs_dir(&self) -> PathBuf {
        self.inner.root.join("jobs")
    }

    /// `path` resolved, if it lies inside the data directory.
    pub fn inside(&self, path: &Path) -> Option<PathBuf> {
        let p = path.canonicalize().ok()?;
        p.starts_with(&self.inner.root).then_some(p)
    }

    /// A slot for one upload, or `None` when
    /// [`upload::MAX_CONCURRENT_UPLOADS`] are in progress.
    pub fn upload_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.inner.uploads).try_acquire_owned().ok()
    }

    fn stop_signal(&self) -> watch::Receiver<bool> {
        self.inner.stop.subscribe()
    }
}

/// Generates a random token (32 hex digits from /dev/urandom).
pub fn generate_token() -> Result<String, HttpError> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(HttpError::Random)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Compares without an early exit, so timing does not reveal the prefix.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// True when the request carries the token (bearer header or cookie).
pub fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer.is_some_and(|b| same(b.trim().as_bytes(), token.as_bytes())) {
        return true;
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .any(|v| same(v.as_bytes(), token.as_bytes()))
}

async fn api_auth(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if authorized(req.headers(), &s.config().token) {
        next.run(req).await
    } else {
        api::ApiError::Unauthorized.into_response()
    }
}

async fn page_auth(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if authorized(req.headers(), &s.config().token) {
        next.run(req).await
    } else {
        Redirect::to("/login").into_response()
    }
}

/// The dashboard: pages, `/api/v1`, login and static assets. Other modules
/// can `merge` more routes (e.g. `/metrics`) into the result.
pub fn router(state: AppState) -> Router {
    let body_limit = usize::try_from(state.config().limits.max_total.saturating_add(1 << 20))
        .unwrap_or(usize::MAX);
    let api = Router::new()
        .route("/api/v1/overview", get(api::overview))
        .route("/api/v1/jobs", get(api::jobs).post(api::start_job))
        .route("/api/v1/jobs/{id}", get(api::job))
        .route("/api/v1/jobs/{id}/cancel", post(api::cancel))
        .route("/api/v1/jobs/{id}/archive", get(download::archive))
        .route("/api/v1/jobs/{id}/manifest", get(download::manifest))
        .route("/api/v1/workers", get(api::workers))
        .route(
            "/api/v1/datasets",
            get(api::datasets)
                .post(upload::upload)
                .layer(DefaultBodyLimit::max(body_limit)),
        )
        .route("/api/v1/events", get(api::events))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), api_auth));
    let pages = Router::new()
        .route("/", get(pages::jobs_page))
        .route("/jobs/{id}", get(pages::job_page))
        .route("/workers", get(pages::workers_page))
        .route("/new", get(pages::new_page))
        .route_layer(middleware::from_fn_with_state(state.clone(), page_auth));
    let open = Router::new()
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/assets/{file}", get(pages::asset))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found") });
    api.merge(pages).merge(open).with_state(state)
}

/// `GET /metrics`: the master's metrics in the Prometheus text format
/// (bearer token like the API).
async fn metrics(
    axum::extract::State(s): axum::extract::State<AppState>,
) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        crate::metrics::render(s.master()),
    )
}

/// Serves `router` on `listener` (a `TcpListener`, or a
/// [`crate::security::TlsListener`] for https) until `shutdown` resolves;
/// samples progress for the charts meanwhile. Open event streams end at
/// shutdown.
pub async fn serve<L>(
    listener: L,
    state: AppState,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let sampler = {
        let m = state.master().clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(crate::master::view::SAMPLE_PERIOD);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                t.tick().await;
                m.sample(std::time::Instant::now());
            }
        })
    };
    let stop = state.inner.stop.clone();
    let result = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            stop.send_replace(true);
        })
        .await;
    sampler.abort();
    result.map_err(HttpError::Serve)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn token_from_bearer_or_cookie() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, "s3cret"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        assert!(authorized(&h, "s3cret"));
        assert!(!authorized(&h, "s3cre"));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; imgnorm_token=s3cret; c=d"),
        );
        assert!(authorized(&h, "s3cret"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("imgnorm_token=s3cretx"),
        );
        assert!(!authorized(&h, "s3cret"));
        assert_eq!(generate_token().map(|t| t.len()).ok(), Some(32));
    }
}
