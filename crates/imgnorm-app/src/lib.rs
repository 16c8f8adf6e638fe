//! Operating an imgnorm cluster: the shared flags and their conversion to
//! domain options, worker process launch, the autoscaler and its backends,
//! Prometheus metrics, the dashboard, and the wiring of `run`, `submit`,
//! `status` and `wait`. Builds on the master; the binary builds on it.
#![warn(missing_docs)]

pub mod app;
pub mod args;
pub mod autoscale;
pub mod http;
pub mod launch;
pub mod metrics;

// Lower layers' modules under the `crate::` paths these files used before
// the split into crates (issue 17), so moved files kept their imports and
// concurrent branches still merge by rename. Not re-exported.
use imgnorm_engine::{budget, output, progress};
use imgnorm_master as master;
use imgnorm_net::{limits, security, shutdown, wire};
