//! imgnorm's engine: files in, arrays and datasets out, with no network.
//! Discovery, decoding (libjpeg-turbo through `csrc/jpeg_shim.c`, the other
//! formats in Rust), normalization, output layouts, local and object storage,
//! dataset finishing, and the single-process centralized run. Depends only on
//! imgnorm-core; the master, the workers and the tools build on it.
#![warn(missing_docs)]

pub mod budget;
pub mod centralized;
pub mod claim;
pub mod decode;
pub mod discovery;
pub mod engine;
pub mod finish;
pub mod formats;
pub mod fsio;
pub mod jpeg;
pub mod output;
pub mod progress;
pub mod rerun;
pub mod storage;
pub mod tiles;
