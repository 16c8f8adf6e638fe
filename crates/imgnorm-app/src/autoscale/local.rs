//! The `local` autoscaling backend: worker processes of this executable on
//! the master's host, drained with SIGTERM and reaped with `try_wait`.
use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::{Backend, Exit, ScaleError};

/// Settings of the local backend.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// The `imgnorm` executable the workers run (normally this one).
    pub exe: std::path::PathBuf,
    /// The master's URL as workers reach it.
    pub master_url: String,
    /// `--threads` and `--memory-budget` of each worker.
    pub flags: crate::launch::WorkerFlags,
    /// TLS trust, secret and `--insecure` for the workers.
    pub access: crate::security::WorkerAccess,
}

/// Worker processes by pid.
pub struct Local {
    cfg: LocalConfig,
    children: HashMap<String, Child>,
}

impl Local {
    /// A backend with no process yet.
    pub fn new(cfg: LocalConfig) -> Local {
        Local {
            cfg,
            children: HashMap::new(),
        }
    }
}

impl Backend for Local {
    fn kind(&self) -> &'static str {
        "local"
    }

    /// Starts `imgnorm worker --name <name>`; returns its pid as the handle.
    async fn start(&mut self, name: &str) -> Result<String, ScaleError> {
        let child = Command::new(&self.cfg.exe)
            .arg("worker")
            .arg("--master")
            .arg(&self.cfg.master_url)
            .args(self.cfg.flags.args())
            .arg("--name")
            .arg(name)
            .arg("--connect-timeout")
            .arg("30")
            .args(self.cfg.access.args())
            .envs(self.cfg.access.env())
            .env(
                "IMGNORM_LOG",
                std::env::var("IMGNORM_WORKER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(ScaleError::Spawn)?;
        let handle = child
            .id()
            .map_or_else(|| name.to_string(), |p| p.to_string());
        self.children.insert(handle.clone(), child);
        Ok(handle)
    }

    /// SIGTERM: the worker finishes its batch, hands back the rest, exits.
    async fn drain(&mut self, handle: &str) -> Result<(), ScaleError> {
        if let Some(pid) = self.children.get(handle).and_then(Child::id) {
            crate::launch::terminate(pid);
        }
        Ok(())
    }

    /// SIGKILL.
    async fn kill(&mut self, handle: &str) -> Result<(), ScaleError> {
        if let Some(c) = self.children.get_mut(handle) {
            let _ = c.start_kill();
        }
        Ok(())
    }

    /// Processes that have exited since the last call.
    async fn reap(&mut self) -> Result<Vec<Exit>, ScaleError> {
        let mut out = Vec::new();
        self.children.retain(|handle, c| match c.try_wait() {
            Ok(Some(status)) => {
                out.push(Exit {
                    handle: handle.clone(),
                    status: status.to_string(),
                });
                false
            }
            Ok(None) => true,
            Err(e) => {
                out.push(Exit {
                    handle: handle.clone(),
                    status: format!("cannot wait for it: {e}"),
                });
                false
            }
        });
        Ok(out)
    }

    /// Drains every process, waits up to `grace`, kills the rest.
    async fn stop_all(&mut self, grace: Duration) {
        for c in self.children.values() {
            if let Some(pid) = c.id() {
                crate::launch::terminate(pid);
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        for (_, mut c) in self.children.drain() {
            if tokio::time::timeout_at(deadline, c.wait()).await.is_err() {
                let _ = c.kill().await;
            }
        }
    }
}
