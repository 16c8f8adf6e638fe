//! imgnorm's command line ([`cli`], with `src/bin/imgnorm.rs`) and a facade
//! over the workspace's crates: each module is re-exported under the path it
//! had before the split into crates (`imgnorm::engine`, `imgnorm::master`…),
//! so the integration tests and the fuzz targets name them unchanged. The
//! layers, lowest first: imgnorm-core and imgnorm-proto, imgnorm-engine,
//! imgnorm-net, imgnorm-master and imgnorm-worker, imgnorm-app,
//! imgnorm-tools, this crate.
#![warn(missing_docs)]

pub mod cli;

pub use imgnorm_app::{app, args, autoscale, http, launch, metrics};
pub use imgnorm_engine::{
    budget, centralized, claim, decode, discovery, engine, finish, formats, fsio, jpeg, output,
    progress, storage, tiles,
};
pub use imgnorm_master as master;
pub use imgnorm_net::{health, host, limits, security, shutdown, wire};
pub use imgnorm_tools::{bench, demo, fuzzing, simulate, synth};
pub use imgnorm_worker as worker;
