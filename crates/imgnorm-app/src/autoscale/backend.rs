//! The contract every autoscaling backend keeps ([`Backend`]): start an
//! instance under a name, drain it (the worker's SIGTERM path), kill it,
//! report the instances that ended (asked or not), and stop everything on
//! exit. The controller in [`super`] only speaks this trait, so adding a
//! backend is one file with one `impl Backend`; [`super::harness`] checks
//! any implementation against the contract with real instances.
use std::future::Future;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{Exit, ScaleError};

/// A source of worker instances (processes, containers, batch jobs).
///
/// Handles are the backend's own ids (a pid, a container id, a Slurm job
/// id); names are what the worker registers with the master as (`--name`).
/// Every method may be called at any time, also with a handle that has
/// already ended: that is not an error.
pub trait Backend: Send + 'static {
    /// Short name for the view, `/metrics` and the logs.
    fn kind(&self) -> &'static str;

    /// Whether the controller converges this backend to the target. False
    /// for a backend that starts nothing and only publishes the target for
    /// an outside scaler.
    fn converges(&self) -> bool {
        true
    }

    /// Instances left by an earlier master that this backend took over,
    /// as `(name, handle)`; asked once, right after the backend is made.
    fn adopted(&mut self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// Starts one worker registering as `name`; returns its handle.
    fn start(&mut self, name: &str) -> impl Future<Output = Result<String, ScaleError>> + Send;

    /// Asks an instance to drain: finish its batch, hand back what it
    /// prefetched, leave. It shows up in [`Backend::reap`] once gone.
    fn drain(&mut self, handle: &str) -> impl Future<Output = Result<(), ScaleError>> + Send;

    /// Ends an instance now (a drain that took longer than the grace).
    fn kill(&mut self, handle: &str) -> impl Future<Output = Result<(), ScaleError>> + Send;

    /// The instances that ended since the last call, each reported once,
    /// whether asked to (drain, kill) or not (crash, OOM kill, a batch
    /// system's time limit or preemption).
    fn reap(&mut self) -> impl Future<Output = Result<Vec<Exit>, ScaleError>> + Send;

    /// Drains every instance, waits up to `grace`, ends the rest; nothing
    /// this backend started may be left afterwards.
    fn stop_all(&mut self, grace: Duration) -> impl Future<Output = ()> + Send;
}

/// [`Backend`] behind a pointer: the controller holds `Box<dyn Dyn>`, so it
/// is one type whatever the backend. Implemented for every [`Backend`].
pub(crate) trait Dyn: Send {
    fn kind(&self) -> &'static str;
    fn converges(&self) -> bool;
    fn adopted(&mut self) -> Vec<(String, String)>;
    fn start<'a>(&'a mut self, name: &'a str) -> BoxFuture<'a, Result<String, ScaleError>>;
    fn drain<'a>(&'a mut self, handle: &'a str) -> BoxFuture<'a, Result<(), ScaleError>>;
    fn kill<'a>(&'a mut self, handle: &'a str) -> BoxFuture<'a, Result<(), ScaleError>>;
    fn reap(&mut self) -> BoxFuture<'_, Result<Vec<Exit>, ScaleError>>;
    fn stop_all(&mut self, grace: Duration) -> BoxFuture<'_, ()>;
}

impl<B: Backend> Dyn for B {
    fn kind(&self) -> &'static str {
        Backend::kind(self)
    }
    fn converges(&self) -> bool {
        Backend::converges(self)
    }
    fn adopted(&mut self) -> Vec<(String, String)> {
        Backend::adopted(self)
    }
    fn start<'a>(&'a mut self, name: &'a str) -> BoxFuture<'a, Result<String, ScaleError>> {
        Box::pin(Backend::start(self, name))
    }
    fn drain<'a>(&'a mut self, handle: &'a str) -> BoxFuture<'a, Result<(), ScaleError>> {
        Box::pin(Backend::drain(self, handle))
    }
    fn kill<'a>(&'a mut self, handle: &'a str) -> BoxFuture<'a, Result<(), ScaleError>> {
        Box::pin(Backend::kill(self, handle))
    }
    fn reap(&mut self) -> BoxFuture<'_, Result<Vec<Exit>, ScaleError>> {
        Box::pin(Backend::reap(self))
    }
    fn stop_all(&mut self, grace: Duration) -> BoxFuture<'_, ()> {
        Box::pin(Backend::stop_all(self, grace))
    }
}

/// The `external` backend: starts nothing. The controller still runs the
/// policy and publishes the target (`/metrics`, `status`) for an outside
/// scaler such as a Kubernetes HPA (deploy/k8s/overlays/autoscaled).
pub struct External;

impl Backend for External {
    fn kind(&self) -> &'static str {
        "external"
    }
    fn converges(&self) -> bool {
        false
    }
    async fn start(&mut self, name: &str) -> Result<String, ScaleError> {
        Ok(name.to_string())
    }
    async fn drain(&mut self, _handle: &str) -> Result<(), ScaleError> {
        Ok(())
    }
    async fn kill(&mut self, _handle: &str) -> Result<(), ScaleError> {
        Ok(())
    }
    async fn reap(&mut self) -> Result<Vec<Exit>, ScaleError> {
        Ok(Vec::new())
    }
    async fn stop_all(&mut self, _grace: Duration) {}
}
