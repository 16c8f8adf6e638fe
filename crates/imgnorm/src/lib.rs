//! imgnorm's runtime: the engine that turns files into arrays, discovery, the
//! centralized baseline, the master and workers over gRPC, and the CLI glue.
#![warn(missing_docs)]

pub mod app;
pub mod args;
pub mod autoscale;
pub mod bench;
pub mod budget;
pub mod centralized;
pub mod claim;
pub mod cli;
pub mod decode;
pub mod demo;
pub mod discovery;
pub mod engine;
pub mod finish;
pub mod formats;
pub mod fsio;
pub mod fuzzing;
pub mod health;
pub mod host;
pub mod http;
pub mod jpeg;
pub mod launch;
pub mod limits;
pub mod master;
pub mod metrics;
pub mod output;
pub mod progress;
pub mod security;
pub mod shutdown;
pub mod storage;
pub mod synth;
pub mod tiles;
pub mod wire;
pub mod worker;
