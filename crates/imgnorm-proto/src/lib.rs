//! The `imgnorm.v1` gRPC protocol: the generated message types and the
//! `Coordinator` client and server. Nothing but generated code lives here.
#![allow(missing_docs, clippy::all)]

/// Protocol version carried in `Hello` and `Welcome`; a worker with another
/// version is refused at registration.
///
/// 2: the engine options in a `JobSpec` may ask for geometry (`--resize`, ...)
/// and output formats (`--format`), jobs may have two phases (`JobSpec.phase`,
/// `JobSpec.params`, `ImageDone.raw`), and job roots may be
/// `s3://bucket/prefix` URLs; a version-1 worker would ignore or misread all
/// three.
///
/// 3: records, raw statistics and dataset parameters carry the sample type
/// and send extremes as doubles (signed, 32-bit and float samples); a
/// version-2 worker's unsigned extremes are in fields version 3 no longer
/// reads.
pub const PROTOCOL_VERSION: u32 = 3;

/// Generated code for package `imgnorm.v1`.
pub mod v1 {
    tonic::include_proto!("imgnorm.v1");
}
