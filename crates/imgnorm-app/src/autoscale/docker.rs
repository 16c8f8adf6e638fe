//! The `docker` autoscaling backend: worker containers created from the
//! project's image through the Docker Engine API on its Unix socket (a small
//! HTTP/1.1 client on hyper, which the gRPC stack already links; no Docker
//! CLI needed, so it works from the `FROM scratch` image with the socket
//! mounted). Containers carry the labels `imgnorm.autoscale.owner` and
//! `imgnorm.autoscale.name`; a master that starts again adopts the running
//! ones and removes the exited ones.
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use super::{Backend, Exit, ScaleError};

/// Engine API version used (Docker 20.10 and later).
const API: &str = "/v1.41";
/// Label naming the master that owns a container.
pub const OWNER_LABEL: &str = "imgnorm.autoscale.owner";
/// Label carrying the worker name.
pub const NAME_LABEL: &str = "imgnorm.autoscale.name";

/// Docker Engine API failures.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The socket could not be reached.
    #[error("cannot reach the Docker Engine at {socket}: {source}")]
    Connect {
        /// Socket path.
        socket: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// HTTP-level failure talking to the engine.
    #[error("Docker Engine API {op}: {message}")]
    Http {
        /// What was attempted.
        op: String,
        /// Why.
        message: String,
    },
    /// The engine answered with an error status.
    #[error("Docker Engine API {op} answered {status}: {message}")]
    Api {
        /// What was attempted.
        op: String,
        /// HTTP status.
        status: u16,
        /// The engine's message.
        message: String,
    },
}

/// Settings of the Docker backend.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// Engine socket (`DOCKER_HOST=unix://…` or `/var/run/docker.sock`).
    pub socket: PathBuf,
    /// Worker image.
    pub image: String,
    /// Network the workers join (the master must be reachable on it).
    pub network: Option<String>,
    /// Bind mounts, `host:container[:ro]`.
    pub volumes: Vec<String>,
    /// `uid:gid` the workers run as (the image's user when None).
    pub user: Option<String>,
    /// The master's URL as the workers reach it.
    pub master_url: String,
    /// Owner label value: one per master, so two masters never touch each
    /// other's workers.
    pub owner: String,
    /// `--threads` and `--memory-budget` of each worker.
    pub flags: crate::launch::WorkerFlags,
    /// TLS trust (`--tls-ca` as the containers see the file), secret (in
    /// the container's environment) and `--insecure` for the workers.
    pub access: crate::security::WorkerAccess,
}

impl DockerConfig {
    /// The socket from `DOCKER_HOST` (`unix://` only) or the default.
    pub fn default_socket() -> PathBuf {
        std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
    }
}

/// The backend: the engine plus the containers it created (by id).
pub struct Docker {
    cfg: DockerConfig,
    /// Container id -> worker name, for the containers this backend owns.
    owned: HashMap<String, String>,
    /// Running containers of an earlier master, `(name, id)`, until asked.
    adopted: Vec<(String, String)>,
}

impl Docker {
    /// Checks the engine answers, removes exited leftovers of this owner and
    /// adopts running ones (see [`Backend::adopted`]).
    pub async fn connect(cfg: DockerConfig) -> Result<Docker, DockerError> {
        let mut d = Docker {
            cfg,
            owned: HashMap::new(),
            adopted: Vec::new(),
        };
        d.call(Method::GET, "/_ping", None, "ping").await?;
        let mut adopted = Vec::new();
        for c in d.list().await? {
            if c.state == "running" || c.state == "created" || c.state == "restarting" {
                d.owned.insert(c.id.clone(), c.name.clone());
                adopted.push((c.name, c.id));
            } else {
                d.remove(&c.id).await?;
            }
        }
        d.adopted = adopted;
        Ok(d)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        op: &str,
    ) -> Result<(StatusCode, Bytes), DockerError> {
        let stream = tokio::net::UnixStream::connect(&self.cfg.socket)
            .await
            .map_err(|source| DockerError::Connect {
                socket: self.cfg.socket.clone(),
                source,
            })?;
        let http = |e: &dyn std::fmt::Display| DockerError::Http {
            op: op.to_string(),
            message: e.to_string(),
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http(&e))?;
        let conn = tokio::spawn(conn);
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(format!("{API}{path}"))
            .header("host", "docker")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| http(&e))?;
        let resp = sender.send_request(req).await.map_err(|e| http(&e))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| http(&e))?
            .to_bytes();
        conn.abort();
        if !status.is_success() && status != StatusCode::NOT_MODIFIED {
            let message = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(DockerError::Api {
                op: op.to_string(),
                status: status.as_u16(),
                message,
            });
        }
        Ok((status, bytes))
    }

    async fn list(&self) -> Result<Vec<Listed>, DockerError> {
        let filter = json!({ "label": [format!("{OWNER_LABEL}={}", self.cfg.owner)] }).to_string();
        let path = format!("/containers/json?all=true&filters={}", encode(&filter));
        let (_, body) = self
            .call(Method::GET, &path, None, "list containers")
            .await?;
        let v: Value = serde_json::from_slice(&body).map_err(|e| DockerError::Http {
            op: "list containers".into(),
            message: e.to_string(),
        })?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| {
                        Some(Listed {
                            id: c.get("Id")?.as_str()?.to_string(),
                            state: c.get("State")?.as_str()?.to_string(),
                            status: c
                                .get("Status")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string(),
                            name: c
                                .get("Labels")
                                .and_then(|l| l.get(NAME_LABEL))
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Creates and starts a worker container; returns its id.
    async fn create(&mut self, name: &str) -> Result<String, DockerError> {
        let container = format!("{}-{name}", self.cfg.owner);
        let mut host = json!({ "Binds": self.cfg.volumes, "Init": false });
        if let Some(n) = &self.cfg.network {
            host["NetworkMode"] = json!(n);
        }
        let mut env = vec![format!(
            "IMGNORM_LOG={}",
            std::env::var("IMGNORM_WORKER_LOG").unwrap_or_else(|_| "info".into())
        )];
        // Test hook, passed through like the local backend's inherited env.
        if let Ok(v) = std::env::var("IMGNORM_TEST_DELAY_PER_IMAGE_MS") {
            env.push(format!("IMGNORM_TEST_DELAY_PER_IMAGE_MS={v}"));
        }
        env.extend(
            self.cfg
                .access
                .env()
                .into_iter()
                .map(|(k, v)| format!("{k}={v}")),
        );
        let mut cmd = vec![
            "worker".to_string(),
            "--master".into(),
            self.cfg.master_url.clone(),
            "--name".into(),
            name.to_string(),
            "--connect-timeout".into(),
            "60".into(),
        ];
        cmd.extend(self.cfg.flags.args());
        cmd.extend(self.cfg.access.args());
        let mut spec = json!({
            "Image": self.cfg.image,
            "Cmd": cmd,
            "Env": env,
            "Labels": { OWNER_LABEL: self.cfg.owner, NAME_LABEL: name },
            "HostConfig": host,
        });
        if let Some(u) = &self.cfg.user {
            spec["User"] = json!(u);
        }
        let path = format!("/containers/create?name={}", encode(&container));
        let (_, body) = match self
            .call(Method::POST, &path, Some(spec.clone()), "create container")
            .await
        {
            // A leftover with the same name (e.g. from a crashed run of an
            // owner with the same label): remove it and try once more.
            Err(DockerError::Api { status: 409, .. }) => {
                self.remove(&container).await?;
                self.call(Method::POST, &path, Some(spec), "create container")
                    .await?
            }
            r => r?,
        };
        let id = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("Id").and_then(Value::as_str).map(str::to_string))
            .ok_or_else(|| DockerError::Http {
                op: "create container".into(),
                message: "no Id in the answer".into(),
            })?;
        self.owned.insert(id.clone(), name.to_string());
        if let Err(e) = self
            .call(
                Method::POST,
                &format!("/containers/{id}/start"),
                None,
                "start container",
            )
            .await
        {
            self.owned.remove(&id);
            let _ = self.remove(&id).await;
            return Err(e);
        }
        Ok(id)
    }

    /// Sends a signal to a container (SIGTERM drains a worker).
    pub async fn signal(&mut self, id: &str, signal: &str) -> Result<(), DockerError> {
        match self
            .call(
                Method::POST,
                &format!("/containers/{id}/kill?signal={signal}"),
                None,
                "signal container",
            )
            .await
        {
            // Already stopped (409) or gone (404): the next reap sees it.
            Err(DockerError::Api {
                status: 404 | 409, ..
            }) => Ok(()),
            r => r.map(|_| ()),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), DockerError> {
        match self
            .call(
                Method::DELETE,
                &format!("/containers/{id}?force=true"),
                None,
                "remove container",
            )
            .await
        {
            Err(DockerError::Api { status: 404, .. }) => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// Containers of this backend that have stopped (removed on the way).
    async fn reap_stopped(&mut self) -> Result<Vec<Exit>, DockerError> {
        let listed: HashMap<String, Listed> = self
            .list()
            .await?
            .into_iter()
            .map(|c| (c.id.clone(), c))
            .collect();
        let mut out = Vec::new();
        let ids: Vec<String> = self.owned.keys().cloned().collect();
        for id in ids {
            let status = match listed.get(&id) {
                None => "gone".to_string(),
                Some(c) if c.state == "exited" || c.state == "dead" => c.status.clone(),
                Some(_) => continue,
            };
            self.remove(&id).await?;
            self.owned.remove(&id);
            out.push(Exit { handle: id, status });
        }
        Ok(out)
    }

    /// Drains every owned container, waits up to `grace`, then removes them
    /// all (force: a container still running is killed).
    async fn remove_all(&mut self, grace: Duration) {
        let ids: Vec<String> = self.owned.keys().cloned().collect();
        for id in &ids {
            if let Err(e) = self.signal(id, "SIGTERM").await {
                tracing::warn!(error = %e, "autoscale: cannot drain a worker container");
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        while !self.owned.is_empty() && tokio::time::Instant::now() < deadline {
            match self.reap_stopped().await {
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "autoscale: cannot list worker containers");
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        for id in std::mem::take(&mut self.owned).into_keys() {
            if let Err(e) = self.remove(&id).await {
                tracing::warn!(error = %e, "autoscale: cannot remove a worker container");
            }
        }
    }
}

impl Backend for Docker {
    fn kind(&self) -> &'static str {
        "docker"
    }
    fn adopted(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.adopted)
    }
    async fn start(&mut self, name: &str) -> Result<String, ScaleError> {
        Ok(self.create(name).await?)
    }
    async fn drain(&mut self, handle: &str) -> Result<(), ScaleError> {
        Ok(self.signal(handle, "SIGTERM").await?)
    }
    async fn kill(&mut self, handle: &str) -> Result<(), ScaleError> {
        Ok(self.signal(handle, "SIGKILL").await?)
    }
    async fn reap(&mut self) -> Result<Vec<Exit>, ScaleError> {
        Ok(self.reap_stopped().await?)
    }
    async fn stop_all(&mut self, grace: Duration) {
        self.remove_all(grace).await
    }
}

struct Listed {
    id: String,
    state: String,
    status: String,
    name: String,
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn encode_escapes_json() {
        assert_eq!(super::encode("{\"a\":[1]}"), "%7B%22a%22%3A%5B1%5D%7D");
        assert_eq!(super::encode("auto-1"), "auto-1");
    }
}
