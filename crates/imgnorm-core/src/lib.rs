//! Pure core of imgnorm: typed ids, engine options, the min-max kernel, manifest
//! records, dataset statistics and the scheduler state machine. Nothing in this crate touches the
//! network, the filesystem or a clock: time comes in as a parameter.
#![warn(missing_docs)]

pub mod autoscale;
pub mod ids;
pub mod normalize;
pub mod options;
pub mod record;
pub mod scheduler;
pub mod stats;
