//! The `slurm` autoscaling backend: each worker is a batch job submitted
//! with `sbatch` (its script `exec`s `imgnorm worker`, so the job's batch
//! step is the worker), drained with `scancel --batch --signal=TERM` (the
//! worker's SIGTERM path), cancelled with `scancel`, and watched with
//! `squeue`: a job that left the queue or reached a final state (time limit,
//! preemption, node failure, cancelled by someone else) is reported like a
//! dead worker and replaced.
//!
//! Jobs are named `<prefix>-<worker name>` with a prefix unique to this
//! master (`imgnorm-<8 hex>`), so jobs of two masters never mix and a
//! leftover is easy to find. The secret reaches the workers as a file (mode
//! 0600 in a 0700 folder under `--slurm-dir`, which must be on a
//! filesystem the compute nodes share), never on a command line and never
//! in the job's environment; it is removed when the backend stops.
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::{Backend, Exit, ScaleError};

/// Longest a Slurm command may take before it counts as failed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Seconds a worker job waits for an unreachable master before it exits
/// (so jobs of a master that was SIGKILLed end by themselves).
const CONNECT_TIMEOUT_S: u32 = 120;

/// Slurm failures.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// A Slurm command could not be run at all.
    #[error("cannot run `{program}` (is Slurm installed and on PATH?): {source}")]
    Missing {
        /// The command.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// A Slurm command failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line (no secrets: none are ever passed).
        command: String,
        /// Exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A Slurm command did not finish in time.
    #[error("`{command}` did not finish within {COMMAND_TIMEOUT:?}")]
    Timeout {
        /// The command line.
        command: String,
    },
    /// `sbatch --parsable` printed no job id.
    #[error("`sbatch` printed no job id: {output:?}")]
    NoJobId {
        /// What it printed.
        output: String,
    },
    /// A file of the backend could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Settings of the Slurm backend.
#[derive(Debug, Clone)]
pub struct SlurmConfig {
    /// The `imgnorm` executable the jobs run, as compute nodes see it.
    pub exe: PathBuf,
    /// The master's URL as compute nodes reach it.
    pub master_url: String,
    /// `--threads` and `--memory-budget` of each worker (also the job's
    /// `--cpus-per-task` and `--mem`).
    pub flags: crate::launch::WorkerFlags,
    /// TLS trust, secret and `--insecure` for the workers.
    pub access: crate::security::WorkerAccess,
    /// Copy `access.tls_ca` into the job folder (the master's own
    /// certificate, which may not be on the shared filesystem).
    pub copy_tls_ca: bool,
    /// `--partition`.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// `--time`.
    pub time: Option<String>,
    /// More `sbatch` options, one word each.
    pub extra: Vec<String>,
    /// Folder on the shared filesystem for this master's job folder (the
    /// secret, the CA certificate, the jobs' output).
    pub dir: PathBuf,
    /// How long before its time limit a job gets SIGTERM (the worker then
    /// drains and the master replaces it).
    pub drain_grace: Duration,
}

/// One submitted job.
#[derive(Debug, Clone)]
struct Job {
    /// Last state `squeue` showed (`PENDING` right after `sbatch`).
    state: String,
}

/// The backend: the jobs this master submitted.
pub struct Slurm {
    cfg: SlurmConfig,
    prefix: String,
    /// This master's job folder (`<dir>/<prefix>`).
    run_dir: PathBuf,
    /// `--secret-file` of the workers.
    secret_file: Option<PathBuf>,
    /// Jobs not reported ended yet, by id.
    owned: HashMap<String, Job>,
    /// Jobs reported ended that `squeue` still lists (completing): waited
    /// for on stop, so none is left behind.
    lingering: HashSet<String>,
}

impl Slurm {
    /// Checks that `sbatch` runs, makes the job folder (0700) and writes the
    /// secret file (0600) and the CA certificate into it.
    pub async fn new(mut cfg: SlurmConfig) -> Result<Slurm, SlurmError> {
        run("sbatch", &["--version"]).await?;
        let prefix = format!("imgnorm-{:08x}", random_u32());
        let run_dir = cfg.dir.join(&prefix);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&run_dir)
            .map_err(|source| SlurmError::Write {
                path: run_dir.clone(),
                source,
            })?;
        let secret_file = match &cfg.access.secret {
            Some(s) => {
                let path = run_dir.join("secret");
                write_private(&path, format!("{}\n", s.expose()).as_bytes())?;
                Some(path)
            }
            None => None,
        };
        if cfg.copy_tls_ca
            && let Some(ca) = cfg.access.tls_ca.clone()
        {
            let to = run_dir.join("ca.pem");
            std::fs::copy(&ca, &to).map_err(|source| SlurmError::Write {
                path: to.clone(),
                source,
            })?;
            cfg.access.tls_ca = Some(to);
        }
        tracing::info!(
            prefix = %prefix,
            dir = %run_dir.display(),
            "autoscale: Slurm worker jobs are named {prefix}-*; their output goes to the folder"
        );
        Ok(Slurm {
            cfg,
            prefix,
            run_dir,
            secret_file,
            owned: HashMap::new(),
            lingering: HashSet::new(),
        })
    }

    /// The job-name prefix of this master.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The batch script of a worker: `exec imgnorm worker …`.
    fn script(&self, name: &str) -> String {
        let mut argv: Vec<String> = vec![
            self.cfg.exe.display().to_string(),
            "worker".into(),
            "--master".into(),
            self.cfg.master_url.clone(),
            "--name".into(),
            name.to_string(),
            "--connect-timeout".into(),
            CONNECT_TIMEOUT_S.to_string(),
        ];
        argv.extend(self.cfg.flags.args());
        argv.extend(self.cfg.access.args());
        if let Some(f) = &self.secret_file {
            argv.push("--secret-file".into());
            argv.push(f.display().to_string());
        }
        let log = std::env::var("IMGNORM_WORKER_LOG").unwrap_or_else(|_| "info".into());
        let cmd: Vec<String> = argv.iter().map(|a| quote(a)).collect();
        format!(
            "#!/bin/sh\n# imgnorm worker {name}, submitted by the autoscaler of master {prefix}\n\
             IMGNORM_LOG={log}\nexport IMGNORM_LOG\nunset IMGNORM_SECRET\nexec {cmd}\n",
            prefix = self.prefix,
            log = quote(&log),
            cmd = cmd.join(" "),
        )
    }

    /// `sbatch` options of a worker job.
    fn sbatch_args(&self, name: &str) -> Vec<String> {
        let threads = self.cfg.flags.threads.max(1);
        let mem = self
            .cfg
            .flags
            .memory_budget_mib
            .unwrap_or_else(|| crate::budget::default_mib(threads));
        let mut a = vec![
            "--parsable".to_string(),
            format!("--job-name={}-{name}", self.prefix),
            format!("--output={}/{name}-%j.out", self.run_dir.display()),
            format!("--chdir={}", self.run_dir.display()),
            "--ntasks=1".into(),
            format!("--cpus-per-task={threads}"),
            format!("--mem={mem}M"),
            format!(
                "--signal=B:TERM@{}",
                self.cfg.drain_grace.as_secs().clamp(1, 65535)
            ),
            "--export=ALL".into(),
            // Preempted or failed: cancelled, not requeued (a requeued job
            // would come back as a second worker under the same name); the
            // master replaces it with a new job.
            "--no-requeue".into(),
        ];
        if let Some(p) = &self.cfg.partition {
            a.push(format!("--partition={p}"));
        }
        if let Some(p) = &self.cfg.account {
            a.push(format!("--account={p}"));
        }
        if let Some(p) = &self.cfg.time {
            a.push(format!("--time={p}"));
        }
        a.extend(self.cfg.extra.iter().cloned());
        a
    }

    /// Job id -> (state, reason) of this user's jobs that Slurm still knows.
    async fn queue(&self) -> Result<HashMap<String, (String, String)>, SlurmError> {
        let out = run("squeue", &["-h", "--me", "--states=all", "-o", "%i|%T|%r"]).await?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let mut f = l.trim().splitn(3, '|');
                let id = f.next()?.to_string();
                let state = f.next()?.to_string();
                let reason = f.next().unwrap_or("").to_string();
                Some((id, (state, reason)))
            })
            .collect())
    }

    /// Cancels jobs (all of `ids`) outright.
    async fn cancel(&self, ids: &[String]) -> Result<(), SlurmError> {
        if ids.is_empty() {
            return Ok(());
        }
        let args: Vec<&str> = ids.iter().map(String::as_str).collect();
        run("scancel", &args).await.map(|_| ())
    }

    /// SIGTERM to a running job's worker; a job not running yet is
    /// cancelled (there is nothing to drain).
    async fn terminate(&mut self, id: &str) -> Result<(), SlurmError> {
        if self.owned.get(id).is_some_and(|j| j.state == "PENDING") {
            // Maybe started since the last look.
            let q = self.queue().await?;
            if let (Some(j), Some((state, _))) = (self.owned.get_mut(id), q.get(id)) {
                j.state.clone_from(state);
            }
        }
        let pending = self.owned.get(id).is_none_or(|j| j.state == "PENDING");
        if !pending {
            match run("scancel", &["--batch", "--signal=TERM", id]).await {
                Ok(_) => return Ok(()),
                Err(e) => {
                    tracing::debug!(job = id, error = %e, "cannot signal the job; cancelling it")
                }
            }
        }
        self.cancel(&[id.to_string()]).await
    }

    fn remove_files(&mut self) {
        if let Some(f) = self.secret_file.take() {
            let _ = std::fs::remove_file(f);
        }
        let _ = std::fs::remove_file(self.run_dir.join("ca.pem"));
    }
}

/// Whether a job in `state` no longer runs a worker.
fn ended(state: &str) -> bool {
    !matches!(
        state,
        "PENDING"
            | "RUNNING"
            | "SUSPENDED"
            | "CONFIGURING"
            | "RESIZING"
            | "REQUEUED"
            | "REQUEUE_HOLD"
            | "REQUEUE_FED"
            | "RESV_DEL_HOLD"
            | "SIGNALING"
            | "STOPPED"
    )
}

impl Backend for Slurm {
    fn kind(&self) -> &'static str {
        "slurm"
    }

    async fn start(&mut self, name: &str) -> Result<String, ScaleError> {
        let args = self.sbatch_args(name);
        let out = run_with_stdin("sbatch", &args, &self.script(name)).await?;
        let id = out
            .lines()
            .next()
            .and_then(|l| l.split(';').next())
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .ok_or(SlurmError::NoJobId {
                output: out.clone(),
            })?
            .to_string();
        self.owned.insert(
            id.clone(),
            Job {
                state: "PENDING".into(),
            },
        );
        Ok(id)
    }

    async fn drain(&mut self, handle: &str) -> Result<(), ScaleError> {
        Ok(self.terminate(handle).await?)
    }

    async fn kill(&mut self, handle: &str) -> Result<(), ScaleError> {
        Ok(self.cancel(&[handle.to_string()]).await?)
    }

    async fn reap(&mut self) -> Result<Vec<Exit>, ScaleError> {
        if self.owned.is_empty() && self.lingering.is_empty() {
            return Ok(Vec::new());
        }
        let queue = self.queue().await?;
        self.lingering
            .retain(|id| queue.get(id).is_some_and(|(s, _)| s == "COMPLETING"));
        let mut out = Vec::new();
        let ids: Vec<String> = self.owned.keys().cloned().collect();
        for id in ids {
            let status = match queue.get(&id) {
                None => "left the Slurm queue".to_string(),
                Some((state, reason)) if ended(state) => {
                    if state == "COMPLETING" {
                        self.lingering.insert(id.clone());
                    }
                    if reason.is_empty() || reason == "None" {
                        format!("Slurm job {state}")
                    } else {
                        format!("Slurm job {state} ({reason})")
                    }
                }
                Some((state, _)) => {
                    if let Some(j) = self.owned.get_mut(&id) {
                        j.state.clone_from(state);
                    }
                    continue;
                }
            };
            self.owned.remove(&id);
            out.push(Exit { handle: id, status });
        }
        Ok(out)
    }

    async fn stop_all(&mut self, grace: Duration) {
        let ids: Vec<String> = self.owned.keys().cloned().collect();
        for id in &ids {
            if let Err(e) = self.terminate(id).await {
                tracing::warn!(job = %id, error = %e, "autoscale: cannot drain a Slurm job");
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        while !self.owned.is_empty() && tokio::time::Instant::now() < deadline {
            if let Err(e) = Backend::reap(self).await {
                tracing::warn!(error = %e, "autoscale: cannot list the Slurm jobs");
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let left: Vec<String> = self.owned.keys().cloned().collect();
        if let Err(e) = self.cancel(&left).await {
            tracing::warn!(error = %e, "autoscale: cannot cancel Slurm jobs");
        }
        // Wait (bounded) until Slurm has let go of them, so that nothing of
        // this master is listed once it has exited.
        self.lingering.extend(left);
        self.owned.clear();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !self.lingering.is_empty() && tokio::time::Instant::now() < deadline {
            match self.queue().await {
                Ok(q) => self.lingering.retain(|id| {
                    q.get(id)
                        .is_some_and(|(s, _)| !ended(s) || s == "COMPLETING")
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "autoscale: cannot list the Slurm jobs");
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        if !self.lingering.is_empty() {
            tracing::warn!(jobs = ?self.lingering, "autoscale: Slurm still lists cancelled jobs");
        }
        self.remove_files();
    }
}

impl Drop for Slurm {
    /// Last resort (a panic, a dropped controller): cancel what is left,
    /// synchronously, and remove the secret file.
    fn drop(&mut self) {
        if !self.owned.is_empty() {
            let _ = std::process::Command::new("scancel")
                .args(self.owned.keys())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        self.remove_files();
    }
}

/// Runs a Slurm command; its stdout on success.
async fn run(program: &str, args: &[&str]) -> Result<String, SlurmError> {
    let owned: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    run_with_stdin(program, &owned, "").await
}

/// Runs a Slurm command with `input` on stdin, without `IMGNORM_SECRET` in
/// its environment (`sbatch --export=ALL` would copy it into the job), and
/// without the `SLURM_*` variables of a job the master itself may run in
/// (inherited by `sbatch`, they would apply that job's settings, such as
/// its memory, to the worker jobs; `SLURM_CONF` is kept).
async fn run_with_stdin(program: &str, args: &[String], input: &str) -> Result<String, SlurmError> {
    let command = format!("{program} {}", args.join(" "));
    let mut cmd = Command::new(program);
    for (k, _) in std::env::vars_os() {
        if k.to_str()
            .is_some_and(|k| k.starts_with("SLURM_") && k != "SLURM_CONF")
        {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .args(args)
        .env_remove(crate::security::SECRET_ENV)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| SlurmError::Missing {
            program: program.to_string(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that exits without reading its input is not an error here.
        let _ = stdin.write_all(input.as_bytes()).await;
    }
    let out = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| SlurmError::Timeout {
            command: command.clone(),
        })?
        .map_err(|source| SlurmError::Missing {
            program: program.to_string(),
            source,
        })?;
    if !out.status.success() {
        return Err(SlurmError::Failed {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates `path` with mode 0600 (replacing a leftover) and writes `data`.
fn write_private(path: &Path, data: &[u8]) -> Result<(), SlurmError> {
    let err = |source| SlurmError::Write {
        path: path.to_path_buf(),
        source,
    };
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)
}

/// Single-quotes a word for `sh`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Four random bytes from the system's random source (the time and pid if
/// it cannot be read: the prefix only has to differ between masters).
fn random_u32() -> u32 {
    use std::io::Read;
    let mut b = [0u8; 4];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
        Ok(()) => u32::from_le_bytes(b),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            t ^ std::process::id().rotate_left(16)
        }
    }
}

/// Splits `--slurm-extra` into `sbatch` options: whitespace separates
/// words, single or double quotes group them (`--comment="two words"`).
pub fn split_extra(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("unclosed {q} in --slurm-extra"));
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_options_split_on_whitespace_and_keep_quoted_words() {
        assert_eq!(
            split_extra(" --qos=low  --comment=\"two words\" --constraint='a&b'").unwrap(),
            ["--qos=low", "--comment=two words", "--constraint=a&b"]
        );
        assert!(split_extra("").unwrap().is_empty());
        assert!(split_extra("--comment='open").is_err());
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(quote("a'b c"), r"'a'\''b c'");
    }

    #[test]
    fn final_states_end_a_worker_and_queue_states_do_not() {
        for s in [
            "COMPLETED",
            "CANCELLED",
            "TIMEOUT",
            "PREEMPTED",
            "NODE_FAIL",
            "FAILED",
        ] {
            assert!(ended(s), "{s}");
        }
        assert!(ended("COMPLETING"));
        for s in ["PENDING", "RUNNING", "SUSPENDED", "REQUEUED", "CONFIGURING"] {
            assert!(!ended(s), "{s}");
        }
    }
}
