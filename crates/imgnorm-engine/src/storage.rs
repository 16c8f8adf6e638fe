//! Where a job's input and output live: a local folder or a prefix in an
//! S3-compatible object store (`s3://bucket/prefix`), and the few operations
//! the modes need on a prefix: list (sorted like a local walk), get, put (one
//! PUT, so an object is never visible half-written) and the start-up check.
//!
//! Local folders never pass through here: the engine reads and writes them
//! directly, as before. Object-store I/O runs on a small runtime of its own
//! ([`spawn`], [`block_on`]), so synchronous callers (engine threads, the
//! centralized loop, the master's dataset writer) can wait on it without
//! blocking the async runtime that carries gRPC and heartbeats.
//!
//! Configuration comes from the usual environment variables, read by
//! `object_store`'s `AmazonS3Builder::from_env` (`AWS_ENDPOINT_URL`,
//! `AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP`, ...).
//! Requests are path-style (`ENDPOINT/bucket/key`) unless
//! `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true`: path style works with every
//! S3-compatible server (MinIO, moto, Ceph, SeaweedFS) and with AWS itself.
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};

use crate::discovery::{Discovered, DiscoveryError, discover, read_list};

/// The URL scheme of object-store locations.
pub const SCHEME: &str = "s3://";

/// Name of the object the start-up check writes (and deletes) in the output
/// prefix.
const PROBE: &str = ".imgnorm-write-check";

/// Concurrent GETs per process (prefetching inputs).
pub const GET_CONCURRENCY: usize = 16;
/// Concurrent PUTs per process (uploading outputs); engine threads wait for a
/// slot, which bounds the output bytes held in memory.
pub const PUT_CONCURRENCY: usize = 8;

/// A prefix in an S3-compatible bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct S3Url {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix without leading or trailing `/` (empty: the whole bucket).
    pub prefix: String,
}

impl S3Url {
    /// The full key of `rel` under this prefix.
    pub fn key(&self, rel: &str) -> String {
        if self.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }

    /// Whether `other` lies inside this prefix (same bucket, key prefix at a
    /// `/` boundary).
    pub fn contains(&self, other: &S3Url) -> bool {
        self.bucket == other.bucket
            && (self.prefix.is_empty()
                || other.prefix == self.prefix
                || other.prefix.starts_with(&format!("{}/", self.prefix)))
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.bucket, self.prefix)
    }
}

/// An input or output location as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local (or shared) folder.
    Local(PathBuf),
    /// A prefix in an S3-compatible store.
    S3(S3Url),
}

impl Location {
    /// Parses a CLI value: `s3://bucket[/prefix]` or a local path.
    pub fn parse(s: &str) -> Result<Location, StorageError> {
        let Some(rest) = s.strip_prefix(SCHEME) else {
            return Ok(Location::Local(PathBuf::from(s)));
        };
        let bad = |reason: &'static str| StorageError::BadUrl {
            url: s.to_string(),
            reason,
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket name"));
        }
        if !bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        {
            return Err(bad(
                "bucket names use lowercase letters, digits, '-' and '.'",
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|p| p == "." || p == "..")
            || prefix.contains("//")
            || prefix.contains('\\')
        {
            return Err(bad("the prefix must not contain '.', '..' or empty parts"));
        }
        Ok(Location::S3(S3Url {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        }))
    }

    /// The location a path argument names (CLI values arrive as paths).
    pub fn of(p: &Path) -> Result<Location, StorageError> {
        match p.to_str() {
            Some(s) if s.starts_with(SCHEME) => Location::parse(s),
            _ => Ok(Location::Local(p.to_path_buf())),
        }
    }

    /// The S3 prefix, if this is one.
    pub fn s3(&self) -> Option<&S3Url> {
        match self {
            Location::S3(u) => Some(u),
            Location::Local(_) => None,
        }
    }
}

/// Whether a path argument is an `s3://` URL (and so must not be made
/// absolute or joined like a path).
pub fn is_object_url(p: &Path) -> bool {
    p.to_str().is_some_and(|s| s.starts_with(SCHEME))
}

/// Object-store failures.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The `s3://` URL is malformed.
    #[error("invalid object-store URL {url:?}: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The client could not be configured from the environment.
    #[error(
        "cannot configure the S3 client for {url} (check AWS_ENDPOINT_URL, AWS_REGION, ...): {reason}"
    )]
    Config {
        /// The location.
        url: S3Url,
        /// Why.
        reason: String,
    },
    /// Listing the input prefix failed.
    #[error("cannot list {url}: {reason}")]
    List {
        /// The prefix.
        url: S3Url,
        /// Why.
        reason: String,
    },
    /// The object does not exist.
    #[error("object {url} not found")]
    NotFound {
        /// The object.
        url: String,
    },
    /// Reading an object failed.
    #[error("cannot read object {url}: {reason}")]
    Get {
        /// The object.
        url: String,
        /// Why.
        reason: String,
    },
    /// Writing an object failed.
    #[error("cannot write object {url}: {reason}")]
    Put {
        /// The object.
        url: String,
        /// Why.
        reason: String,
    },
    /// The output prefix is not writable (checked before any work is leased).
    #[error("output {url} is not writable: the test object {PROBE} could not be written: {reason}")]
    NotWritable {
        /// The prefix.
        url: S3Url,
        /// Why.
        reason: String,
    },
    /// A name that cannot be an object key (control characters, empty parts).
    #[error("{name:?} cannot be used as an object key: {reason}")]
    BadKey {
        /// The key.
        name: String,
        /// Why.
        reason: String,
    },
    /// The input prefix holds no object at all.
    #[error("input {0} is empty or does not exist (no object under this prefix)")]
    EmptyInput(S3Url),
    /// `--transfer stream` moves bytes through the master, which object
    /// storage makes unnecessary.
    #[error(
        "--transfer stream needs local --input and --output; with s3:// locations workers read and write the store directly"
    )]
    StreamWithObjects,
    /// An option the object-store path does not implement yet.
    #[error(
        "{0} is not supported with s3:// locations yet; use local folders (or a mounted bucket)"
    )]
    Unsupported(&'static str),
    /// Listing a local input folder failed.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// Creating the local output folder failed.
    #[error("cannot create output folder {path}")]
    CreateOutput {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A background I/O task died.
    #[error("object-store task failed: {0}")]
    Task(String),
}

/// The runtime that carries every object-store request of this process.
fn io_runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        // Building a runtime only fails when the OS refuses threads; there is
        // no way to continue without one.
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("imgnorm-io")
            .enable_all()
            .build()
            .expect("cannot start the object-store I/O runtime")
    })
}

/// Runs `fut` on the I/O runtime; await the handle from any runtime.
pub fn spawn<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    io_runtime().spawn(fut)
}

/// Runs `fut` on the I/O runtime and waits for it. For synchronous code only
/// (engine threads, `spawn_blocking`, the centralized loop): never call it
/// from async code.
pub fn block_on<F>(fut: F) -> Result<F::Output, StorageError>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handle = spawn(fut);
    io_runtime()
        .block_on(handle)
        .map_err(|e| StorageError::Task(e.to_string()))
}

/// Waits for a task started with [`spawn`]. For synchronous code only.
pub fn join<T: Send + 'static>(
    h: tokio::task::JoinHandle<Result<T, StorageError>>,
) -> Result<T, StorageError> {
    io_runtime()
        .block_on(h)
        .map_err(|e| StorageError::Task(e.to_string()))?
}

/// Process-wide slots for GETs and PUTs.
fn slots(put: bool) -> Arc<tokio::sync::Semaphore> {
    static GETS: OnceLock<Arc<tokio::sync::Semaphore>> = OnceLock::new();
    static PUTS: OnceLock<Arc<tokio::sync::Semaphore>> = OnceLock::new();
    let (cell, n) = if put {
        (&PUTS, PUT_CONCURRENCY)
    } else {
        (&GETS, GET_CONCURRENCY)
    };
    Arc::clone(cell.get_or_init(|| Arc::new(tokio::sync::Semaphore::new(n))))
}

/// An input being fetched: its bytes, or the manifest reason.
pub type Fetch = tokio::sync::oneshot::Receiver<Result<Bytes, String>>;

/// Decides from an input's size whether it may be read (the error is the
/// manifest reason): `--max-input-bytes` and a worker's memory budget.
pub type SizeCheck = Arc<dyn Fn(u64) -> Result<(), String> + Send + Sync>;

/// Starts fetching `rel` from `store` on the I/O runtime, at most
/// [`GET_CONCURRENCY`] at once in this process, once `check` accepted its
/// size; the error is already the manifest reason.
pub fn prefetch(store: &Store, rel: &str, check: SizeCheck) -> Fetch {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (store, rel) = (store.clone(), rel.to_string());
    spawn(async move {
        let Ok(_slot) = slots(false).acquire_owned().await else {
            return;
        };
        // Nobody waits any more (lease revoked, session over): skip the GET.
        if tx.is_closed() {
            return;
        }
        let r = match store.get_checked(&rel, |n| check(n)).await {
            Ok(r) => r,
            Err(e) => Err(format!("cannot read input: {}", chain(&e))),
        };
        let _ = tx.send(r);
    });
    rx
}

/// Waits (blocking, from a synchronous thread) for one of the
/// [`PUT_CONCURRENCY`] upload slots; hold the permit until the PUT is done.
pub fn put_slot() -> Result<tokio::sync::OwnedSemaphorePermit, StorageError> {
    io_runtime()
        .block_on(slots(true).acquire_owned())
        .map_err(|e| StorageError::Task(e.to_string()))
}

/// Installs rustls' *ring* provider as the process default, once. reqwest is
/// built without a provider of its own (no aws-lc-sys C build), so this must
/// run before the first client is made; any other rustls user in the process
/// (a future TLS-enabled tonic) then shares the same provider.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err only means another provider was installed first: keep that one.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A handle on one prefix of a bucket. Clients are cached per bucket, so
/// opening the same bucket again reuses its connection pool.
#[derive(Debug, Clone)]
pub struct Store {
    url: S3Url,
    inner: Arc<dyn ObjectStore>,
}

impl Store {
    /// A store for `url`, configured from the environment.
    pub fn open(url: &S3Url) -> Result<Store, StorageError> {
        static CLIENTS: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
        let mut clients = CLIENTS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(inner) = clients.get(&url.bucket) {
            return Ok(Store {
                url: url.clone(),
                inner: Arc::clone(inner),
            });
        }
        install_crypto_provider();
        // What `AmazonS3Builder::from_env` does, on top of our timeouts and
        // retries (`with_client_options` after `from_env` would drop
        // environment settings such as `AWS_ALLOW_HTTP`).
        let mut builder = AmazonS3Builder::new()
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(2),
                    base: 2.0,
                },
                // Transient errors (5xx, throttling, dropped connections) are
                // retried; an endpoint that stays unreachable fails in seconds.
                max_retries: 4,
                retry_timeout: Duration::from_secs(30),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(120)),
            );
        for (key, value) in std::env::vars_os() {
            if let (Some(key), Some(value)) = (key.to_str(), value.to_str())
                && key.starts_with("AWS_")
                && let Ok(k) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>()
            {
                builder = builder.with_config(k, value);
            }
        }
        builder = builder.with_bucket_name(&url.bucket);
        // `AWS_DEFAULT_REGION` is what the AWS CLI reads; object_store only
        // knows `AWS_REGION`.
        if std::env::var_os("AWS_REGION").is_none()
            && let Ok(region) = std::env::var("AWS_DEFAULT_REGION")
        {
            builder = builder.with_region(region);
        }
        let inner: Arc<dyn ObjectStore> =
            Arc::new(builder.build().map_err(|e| StorageError::Config {
                url: url.clone(),
                reason: chain(&e),
            })?);
        clients.insert(url.bucket.clone(), Arc::clone(&inner));
        Ok(Store {
            url: url.clone(),
            inner,
        })
    }

    /// The prefix this store works under.
    pub fn url(&self) -> &S3Url {
        &self.url
    }

    /// The key of `rel`, taken as is. (`ObjectPath::from` would
    /// percent-encode non-ASCII and some punctuation into the key itself, so
    /// `é.png` would be stored as `%C3%A9.png`.)
    fn object_path(&self, rel: &str) -> Result<ObjectPath, StorageError> {
        let key = self.url.key(rel);
        ObjectPath::parse(&key).map_err(|e| StorageError::BadKey {
            name: key,
            reason: chain(&e),
        })
    }

    fn object_url(&self, rel: &str) -> String {
        format!("{SCHEME}{}/{}", self.url.bucket, self.url.key(rel))
    }

    /// Lists every object under the prefix into relative names sorted in
    /// byte order, the order a local walk gives. Objects under `exclude`
    /// (an output prefix inside the input) and "folder" markers (keys ending
    /// in `/`) are left out.
    pub async fn list(&self, exclude: Option<&S3Url>) -> Result<Vec<String>, StorageError> {
        let prefix = match self.url.prefix.as_str() {
            "" => None,
            p => Some(ObjectPath::parse(p).map_err(|e| StorageError::BadKey {
                name: p.to_string(),
                reason: chain(&e),
            })?),
        };
        let skip = exclude
            .filter(|x| self.url.contains(x) && x.prefix != self.url.prefix)
            .map(|x| format!("{}/", x.prefix));
        // Pagination (continuation tokens) is handled by the stream.
        let mut stream = self.inner.list(prefix.as_ref());
        let mut files = Vec::new();
        while let Some(meta) = stream.next().await {
            let meta = meta.map_err(|e| StorageError::List {
                url: self.url.clone(),
                reason: chain(&e),
            })?;
            let key = meta.location.as_ref();
            if skip.as_deref().is_some_and(|s| key.starts_with(s)) {
                continue;
            }
            let rel = if self.url.prefix.is_empty() {
                key
            } else {
                match key
                    .strip_prefix(&*self.url.prefix)
                    .and_then(|r| r.strip_prefix('/'))
                {
                    Some(r) => r,
                    None => continue,
                }
            };
            if rel.is_empty() || rel.ends_with('/') {
                continue;
            }
            files.push(rel.to_string());
        }
        files.sort_unstable();
        files.dedup();
        Ok(files)
    }

    /// Reads `rel` under the prefix.
    pub async fn get(&self, rel: &str) -> Result<Bytes, StorageError> {
        self.get_checked(rel, |_| Ok(()))
            .await?
            .map_err(|reason| StorageError::Get {
                url: self.object_url(rel),
                reason,
            })
    }

    /// Reads `rel` once `check` accepted its size (from the GET's response
    /// headers, before the body is read); `Ok(Err(reason))`: refused by
    /// `check`, nothing of the body read.
    pub async fn get_checked(
        &self,
        rel: &str,
        check: impl FnOnce(u64) -> Result<(), String>,
    ) -> Result<Result<Bytes, String>, StorageError> {
        let key = self.object_path(rel)?;
        let r = match self.inner.get(&key).await {
            Ok(r) => match check(r.meta.size) {
                Ok(()) => r.bytes().await.map(Ok),
                Err(reason) => Ok(Err(reason)),
            },
            Err(e) => Err(e),
        };
        r.map_err(|e| match e {
            object_store::Error::NotFound { .. } => StorageError::NotFound {
                url: self.object_url(rel),
            },
            e => StorageError::Get {
                url: self.object_url(rel),
                reason: chain(&e),
            },
        })
    }

    /// Writes `rel` under the prefix with one PUT: readers see the old object
    /// or the whole new one, never a part (S3 allows 5 GiB in one PUT; the
    /// largest output the default `--max-pixels` allows is 1.6 GB).
    pub async fn put(&self, rel: &str, bytes: Bytes) -> Result<(), StorageError> {
        let key = self.object_path(rel)?;
        self.inner
            .put(&key, PutPayload::from_bytes(bytes))
            .await
            .map(|_| ())
            .map_err(|e| StorageError::Put {
                url: self.object_url(rel),
                reason: chain(&e),
            })
    }

    /// Checks that the prefix is writable: writes and deletes a small object,
    /// so bad credentials or an unreachable endpoint fail the job at start.
    pub async fn check_writable(&self) -> Result<(), StorageError> {
        let key = self.object_path(PROBE)?;
        let payload = PutPayload::from_static(b"imgnorm write check\n");
        self.inner
            .put(&key, payload)
            .await
            .map_err(|e| StorageError::NotWritable {
                url: self.url.clone(),
                reason: chain(&e),
            })?;
        // A store that forbids deletes still works for us; the probe stays.
        if let Err(e) = self.inner.delete(&key).await {
            tracing::warn!(error = %e, "could not delete the write-check object");
        }
        Ok(())
    }
}

/// Lists the input and checks the output of a job, whichever side is local
/// or in an object store: what the master (and `centralized`) do before any
/// image is processed. Local input is walked as [`discover`] does; object
/// input is listed (`EmptyInput` when nothing is there, which is also what a
/// misspelled prefix looks like); object output gets a write check. With an
/// input `list` (`--input-list`), its entries are the files instead
/// ([`read_list`], resolved against the input).
pub async fn prepare(
    input: &Location,
    output: &Location,
    list: Option<&Path>,
) -> Result<Discovered, StorageError> {
    match output {
        Location::S3(u) => Store::open(u)?.check_writable().await?,
        Location::Local(p) => {
            crate::fsio::create_output_dir(p).map_err(|source| StorageError::CreateOutput {
                path: p.clone(),
                source,
            })?
        }
    }
    if let Some(list) = list {
        let root = match input {
            Location::S3(u) => PathBuf::from(u.to_string()),
            Location::Local(p) => p.clone(),
        };
        let list = list.to_path_buf();
        return tokio::task::spawn_blocking(move || read_list(&list, &root))
            .await
            .map_err(|e| StorageError::Task(e.to_string()))?
            .map_err(StorageError::from);
    }
    match input {
        Location::S3(u) => {
            let files = Store::open(u)?.list(output.s3()).await?;
            if files.is_empty() {
                return Err(StorageError::EmptyInput(u.clone()));
            }
            Ok(Discovered {
                files: files.into_iter().collect(),
                problems: Vec::new(),
            })
        }
        Location::Local(p) => {
            let (p, out) = (p.clone(), output.clone());
            let exclude = match &out {
                Location::Local(o) => Some(o.clone()),
                Location::S3(_) => None,
            };
            tokio::task::spawn_blocking(move || discover(&p, exclude.as_deref()))
                .await
                .map_err(|e| StorageError::Task(e.to_string()))?
                .map_err(StorageError::from)
        }
    }
}

/// Error chain of `e` on one line (for manifest reasons).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// The first option of `opts` that object-store jobs do not support yet:
/// the `webdataset` and `stack` layouts (written by the job owner on a local
/// filesystem) and the two-phase scopes.
pub fn unsupported_with_objects(
    opts: &imgnorm_core::options::EngineOptions,
) -> Option<&'static str> {
    use imgnorm_core::options::OutputFormat;
    match opts.format {
        OutputFormat::Webdataset { .. } => return Some("--format webdataset"),
        OutputFormat::Stack => return Some("--format stack"),
        OutputFormat::Npy => {}
    }
    if opts.two_phase() {
        return Some("a statistics phase (--scope dataset, or --standardize without --mean/--std)");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_locations() {
        assert_eq!(
            Location::parse("s3://bucket/a/b/").unwrap(),
            Location::S3(S3Url {
                bucket: "bucket".into(),
                prefix: "a/b".into()
            })
        );
        assert_eq!(
            Location::parse("s3://bucket").unwrap(),
            Location::S3(S3Url {
                bucket: "bucket".into(),
                prefix: String::new()
            })
        );
        assert_eq!(
            Location::parse("data/in").unwrap(),
            Location::Local(PathBuf::from("data/in"))
        );
        for bad in [
            "s3://",
            "s3:///x",
            "s3://Bucket/x",
            "s3://b/a/../c",
            "s3://b/a//c",
        ] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
        assert!(is_object_url(Path::new("s3://b/x")));
        assert!(!is_object_url(Path::new("/s3/b")));
    }

    fn memory_store(prefix: &str, keys: &[&str]) -> Store {
        let inner: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        for k in keys {
            let store = Arc::clone(&inner);
            let key = ObjectPath::parse(*k).unwrap();
            block_on(async move { store.put(&key, PutPayload::from_static(b"x")).await })
                .unwrap()
                .unwrap();
        }
        Store {
            url: S3Url {
                bucket: "b".into(),
                prefix: prefix.into(),
            },
            inner,
        }
    }

    #[test]
    fn list_is_sorted_relative_and_skips_output_and_other_prefixes() {
        let store = memory_store(
            "in",
            &[
                "in/z.png",
                "in/é café.png",
                "in/b/a.png",
                "in/a-b.png",
                "in/out/x.png.npy",
                "inside/no.png",
                "other/no.png",
            ],
        );
        let out = S3Url {
            bucket: "b".into(),
            prefix: "in/out".into(),
        };
        let s = store.clone();
        let files = block_on(async move { s.list(Some(&out)).await })
            .unwrap()
            .unwrap();
        // Byte order, as a local walk sorts: '-' (0x2d) before '/' (0x2f).
        assert_eq!(files, vec!["a-b.png", "b/a.png", "z.png", "é café.png"]);
        let s = store.clone();
        let all = block_on(async move { s.list(None).await })
            .unwrap()
            .unwrap();
        assert_eq!(all.len(), 5);
        let s = store.clone();
        let got = block_on(async move { s.get("é café.png").await }).unwrap();
        assert!(got.is_ok(), "{got:?}");
    }

    #[test]
    fn missing_object_is_not_found_with_its_url() {
        let store = memory_store("in", &["in/a.png"]);
        let s = store.clone();
        let got = block_on(async move { s.get("a.png").await })
            .unwrap()
            .unwrap();
        assert_eq!(&got[..], b"x");
        let err = block_on(async move { store.get("gone.png").await })
            .unwrap()
            .unwrap_err();
        assert_eq!(err.to_string(), "object s3://b/in/gone.png not found");
    }

    #[test]
    fn keys_and_containment() {
        let root = S3Url {
            bucket: "b".into(),
            prefix: "data".into(),
        };
        assert_eq!(root.key("x/y.png"), "data/x/y.png");
        assert_eq!(root.to_string(), "s3://b/data");
        let out = S3Url {
            bucket: "b".into(),
            prefix: "data/out".into(),
        };
        let sibling = S3Url {
            bucket: "b".into(),
            prefix: "database".into(),
        };
        assert!(root.contains(&out));
        assert!(!root.contains(&sibling));
        let whole = S3Url {
            bucket: "b".into(),
            prefix: String::new(),
        };
        assert_eq!(whole.key("k"), "k");
        assert!(whole.contains(&root));
    }
}
