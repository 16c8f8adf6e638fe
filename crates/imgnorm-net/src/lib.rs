//! imgnorm's transport, shared by the master and the workers: the domain
//! <-> protobuf conversions, size and time limits, host facts, transport
//! security (TLS, the shared secret), the health service and the shutdown
//! future. Builds on imgnorm-engine; knows nothing of either side's logic.
#![warn(missing_docs)]

pub mod health;
pub mod host;
pub mod limits;
pub mod security;
pub mod shutdown;
pub mod wire;

// Lower layers' modules under the `crate::` paths these files used before
// the split into crates (issue 17), so moved files kept their imports and
// concurrent branches still merge by rename. Not re-exported.
use imgnorm_engine::storage;
