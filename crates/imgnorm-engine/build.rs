//! Compiles `csrc/jpeg_shim.c`, the C side of `src/jpeg.rs`, against the
//! libjpeg headers that `mozjpeg-sys` exports (its `links = "jpeg"` key
//! hands them over as `DEP_JPEG_INCLUDE`). Needs only a C compiler.
//!
//! Also tells the crate whether the libjpeg-turbo it links was built with
//! its SIMD code (`IMGNORM_JPEG_SIMD`, read from the `jconfig.h` the library
//! was compiled with, so it is true of the build even when `mozjpeg-sys`
//! was built before `nasm` was installed and cargo kept that build), and
//! warns when it was not: same pixels, slower JPEG decoding.

fn main() {
    println!("cargo:rerun-if-changed=csrc/jpeg_shim.c");
    let include = std::env::var_os("DEP_JPEG_INCLUDE")
        .expect("mozjpeg-sys exports its include directories as DEP_JPEG_INCLUDE");
    let mut build = cc::Build::new();
    build.file("csrc/jpeg_shim.c").warnings(true);
    for dir in std::env::split_paths(&include) {
        build.include(dir);
    }
    build.compile("imgnorm_jpeg_shim");
    let mut simd = false;
    for dir in std::env::split_paths(&include) {
        let config = dir.join("jconfig.h");
        if let Ok(h) = std::fs::read_to_string(&config) {
            println!("cargo:rerun-if-changed={}", config.display());
            simd |= h.lines().any(|l| l.trim() == "#define WITH_SIMD 1");
        }
    }
    println!("cargo:rustc-env=IMGNORM_JPEG_SIMD={}", u8::from(simd));
    let x86 = matches!(
        std::env::var("CARGO_CFG_TARGET_ARCH").as_deref(),
        Ok("x86_64" | "x86")
    );
    if x86 && !simd {
        let nasm = std::process::Command::new("nasm")
            .arg("-v")
            .output()
            .is_ok();
        let why = if nasm {
            "mozjpeg-sys was built before nasm was installed; `cargo clean -p mozjpeg-sys` \
             (with --release for release builds) rebuilds it with SIMD"
        } else {
            "nasm not found; scripts/nasm-deps.sh installs it, then `cargo clean -p mozjpeg-sys`"
        };
        println!(
            "cargo:warning=libjpeg-turbo is built without SIMD (same pixels, JPEG decoding \
             about 0.6x as fast): {why}"
        );
    }
}
