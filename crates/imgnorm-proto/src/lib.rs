//! The `imgnorm.v1` gRPC protocol: the generated message types and the
//! `Coordinator` client and server. Nothing but generated code lives here.
#![allow(missing_docs, clippy::all)]

/// Protocol version carried in `Hello` and `Welcome`; a worker with another
/// version is refused at registration. Version 2: the engine options in a
/// `JobSpec` may ask for geometry (`--resize`, ...) and output formats
/// (`--format`) that version-1 workers would silently ignore.
pub const PROTOCOL_VERSION: u32 = 2;

/// Generated code for package `imgnorm.v1`.
pub mod v1 {
    tonic::include_proto!("imgnorm.v1");
}
