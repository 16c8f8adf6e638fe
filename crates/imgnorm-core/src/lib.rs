//! Pure core of imgnorm: typed ids, engine options, the min-max kernel, manifest
//! records, dataset statistics, the scheduler state machine and the checks on
//! untrusted results and paths. Nothing in this crate touches the
//! network, the filesystem or a clock: time comes in as a parameter.
#![warn(missing_docs)]

pub mod autoscale;
pub mod dataset;
pub mod ids;
pub mod jobs;
pub mod normalize;
pub mod options;
pub mod paths;
pub mod record;
pub mod rerun;
pub mod scheduler;
pub mod sim;
pub mod stats;
pub mod validate;
