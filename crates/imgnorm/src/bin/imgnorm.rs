//! The `imgnorm` binary: parses arguments and dispatches to the library. The
//! only place `anyhow` is used.
fn main() {}
