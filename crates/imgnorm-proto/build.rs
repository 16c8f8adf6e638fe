//! Compiles `proto/imgnorm.proto` with the pure-Rust `protox` compiler, so no
//! system `protoc` is needed, and hands the descriptors to tonic's generator.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/imgnorm.proto");
    let fds = protox::compile(["proto/imgnorm.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
