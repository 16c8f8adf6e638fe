//! Tools around imgnorm that are not the product: the deterministic image
//! generator, the benchmark (with its report and charts), the demo, the
//! cluster simulation's command (`imgnorm simulate`), and the bodies of the
//! fuzz targets in `fuzz/`.
#![warn(missing_docs)]

pub mod bench;
pub mod demo;
pub mod fuzzing;
pub mod simulate;
pub mod synth;

// Lower layers' modules under the `crate::` paths these files used before
// the split into crates (issue 17), so moved files kept their imports and
// concurrent branches still merge by rename. Not re-exported.
use imgnorm_app::{app, args, http};
use imgnorm_engine::{budget, centralized, decode, engine, formats, jpeg};
use imgnorm_master as master;
use imgnorm_net::wire;
