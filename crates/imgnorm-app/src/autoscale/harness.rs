//! The one test harness for autoscaling backends: [`check`] drives any
//! [`Backend`] through its contract with real instances (processes,
//! containers, Slurm jobs) and checks each step against an outside view of
//! what runs ([`Probe`]), not against the backend's own bookkeeping. The
//! integration tests run it for every backend this machine can run
//! (tests/it/autoscale.rs, tests/it/slurm.rs); a new backend adds one probe.
//!
//! The workers started here point at a master that does not exist, so they
//! keep retrying (up to their connect timeout) until they are drained or
//! killed: long enough to observe every transition.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Backend;

/// An outside view of the instances, for [`check`].
pub struct Probe<'a> {
    /// Whether the instance behind a handle still exists (a live process,
    /// a container, a job Slurm still lists, pending ones included).
    pub alive: &'a (dyn Fn(&str) -> bool + Sync),
    /// Whether it runs a worker now (for a batch system: the job started).
    pub running: &'a (dyn Fn(&str) -> bool + Sync),
    /// Ends an instance behind the backend's back, as a crash, the OOM
    /// killer or a batch system's time limit would.
    pub kill_outside: &'a (dyn Fn(&str) + Sync),
}

/// Runs the contract: three instances start (the first two run, the third
/// may wait in a batch queue); a drained one, a killed one and one killed
/// from outside are each reported by `reap` exactly once and are gone; draining or killing an ended handle is no
/// error; `stop_all` leaves nothing running and nothing to reap. `within`
/// bounds each wait. Returns what broke the contract.
pub async fn check<B: Backend>(mut b: B, probe: Probe<'_>, within: Duration) -> Result<(), String> {
    let mut seen: HashMap<String, u32> = HashMap::new();
    let early = b
        .reap()
        .await
        .map_err(|e| format!("reap before any start: {e}"))?;
    if !early.is_empty() {
        return Err(format!(
            "reap reported instances before any start: {early:?}"
        ));
    }
    let mut handles = Vec::new();
    for name in ["auto-1", "auto-2", "auto-3"] {
        let h = b
            .start(name)
            .await
            .map_err(|e| format!("start {name}: {e}"))?;
        if handles.contains(&h) {
            return Err(format!("start returned the handle {h} twice"));
        }
        handles.push(h);
    }
    for h in &handles {
        wait(within, || (probe.alive)(h))
            .await
            .map_err(|_| format!("instance {h} does not exist after start"))?;
    }
    for h in &handles[..2] {
        wait(within, || (probe.running)(h))
            .await
            .map_err(|_| format!("instance {h} is not running after start"))?;
    }
    let early = b.reap().await.map_err(|e| format!("reap: {e}"))?;
    if !early.is_empty() {
        return Err(format!(
            "reap reported running instances as ended: {early:?}"
        ));
    }
    let (h1, h2, h3) = (handles[0].clone(), handles[1].clone(), handles[2].clone());
    b.drain(&h1).await.map_err(|e| format!("drain {h1}: {e}"))?;
    reaped(&mut b, &h1, within, &mut seen).await?;
    b.kill(&h2).await.map_err(|e| format!("kill {h2}: {e}"))?;
    reaped(&mut b, &h2, within, &mut seen).await?;
    (probe.kill_outside)(&h3);
    reaped(&mut b, &h3, within, &mut seen).await?;
    for h in [&h1, &h2, &h3] {
        wait(within, || !(probe.alive)(h))
            .await
            .map_err(|_| format!("instance {h} still runs after it was reported ended"))?;
    }
    b.drain(&h1)
        .await
        .map_err(|e| format!("drain of an ended instance: {e}"))?;
    b.kill(&h2)
        .await
        .map_err(|e| format!("kill of an ended instance: {e}"))?;
    let h4 = b
        .start("auto-4")
        .await
        .map_err(|e| format!("start auto-4: {e}"))?;
    wait(within, || (probe.running)(&h4))
        .await
        .map_err(|_| format!("instance {h4} is not running after start"))?;
    b.stop_all(within).await;
    wait(within, || !(probe.alive)(&h4))
        .await
        .map_err(|_| format!("instance {h4} still runs after stop_all"))?;
    let late = b
        .reap()
        .await
        .map_err(|e| format!("reap after stop_all: {e}"))?;
    for e in late {
        *seen.entry(e.handle).or_default() += 1;
    }
    match seen.iter().find(|(_, n)| **n > 1) {
        Some((h, n)) => Err(format!("reap reported {h} {n} times")),
        None => Ok(()),
    }
}

/// Polls `reap` until it reports `handle`.
async fn reaped<B: Backend>(
    b: &mut B,
    handle: &str,
    within: Duration,
    seen: &mut HashMap<String, u32>,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        for e in b.reap().await.map_err(|e| format!("reap: {e}"))? {
            *seen.entry(e.handle).or_default() += 1;
        }
        if seen.contains_key(handle) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("reap never reported {handle} as ended"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `cond` until it holds or `within` passes.
async fn wait(within: Duration, mut cond: impl FnMut() -> bool) -> Result<(), ()> {
    let deadline = Instant::now() + within;
    while !cond() {
        if Instant::now() > deadline {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
