//! The one integration-test binary (one link step instead of one per file).
//! Each module covers one mode of the `imgnorm` binary; `helpers` holds what
//! they share: running the binary, temp folders, reading manifests, comparing
//! output datasets and polling for a condition.

mod autoscale;
mod bench;
mod centralized;
mod chaos;
mod dashboard;
mod decoders;
mod distributed;
mod formats;
mod fuzz_seeds;
mod helpers;
mod jpeg;
mod lifecycle;
mod limits;
mod ml;
mod names;
mod rerun;
mod scope;
mod security;
mod simulate;
mod slurm;
mod stats;
mod uploads;
