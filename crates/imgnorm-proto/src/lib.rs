//! The `imgnorm.v1` gRPC protocol: the generated message types and the
//! `Coordinator` client and server. Nothing but generated code lives here.
#![allow(missing_docs, clippy::all)]

/// Protocol version carried in `Hello` and `Welcome`; a worker with another
/// version is refused at registration.
///
/// 2: job roots may be `s3://bucket/prefix` URLs; a version-1 worker would
/// take them for local paths and fail every image.
pub const PROTOCOL_VERSION: u32 = 2;

/// Generated code for package `imgnorm.v1`.
pub mod v1 {
    tonic::include_proto!("imgnorm.v1");
}
