//! Starting and stopping worker processes of this executable: the flags they
//! are given and the signal that asks one to drain. Shared by `imgnorm run`'s
//! fixed pool (`app::LocalWorkers`) and the autoscaler's backends.

/// Flags of the worker processes `imgnorm run` and the local autoscaler
/// start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerFlags {
    /// `--threads`.
    pub threads: usize,
    /// `--memory-budget` (MiB), when given.
    pub memory_budget_mib: Option<u64>,
}

impl WorkerFlags {
    /// The command-line arguments that carry these flags.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec!["--threads".to_string(), self.threads.max(1).to_string()];
        if let Some(m) = self.memory_budget_mib {
            a.extend(["--memory-budget".to_string(), m.to_string()]);
        }
        a
    }
}

/// Sends SIGTERM to a process.
pub fn terminate(pid: u32) {
    #[cfg(unix)]
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}
