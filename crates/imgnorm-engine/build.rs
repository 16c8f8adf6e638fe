//! Compiles `csrc/jpeg_shim.c`, the C side of `src/jpeg.rs`, against the
//! libjpeg headers that `mozjpeg-sys` exports (its `links = "jpeg"` key
//! hands them over as `DEP_JPEG_INCLUDE`). Needs only a C compiler. Says so
//! when `nasm` is missing, because `mozjpeg-sys` then builds libjpeg-turbo
//! without its SIMD code (same pixels, slower JPEG decoding).

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
    let x86 = matches!(
        std::env::var("CARGO_CFG_TARGET_ARCH").as_deref(),
        Ok("x86_64" | "x86")
    );
    let nasm = std::process::Command::new("nasm")
        .arg("-v")
        .output()
        .is_ok();
    if x86 && !nasm {
        println!(
            "cargo:warning=nasm not found: libjpeg-turbo is built without SIMD (same pixels, \
             JPEG decoding about 0.6x as fast); scripts/nasm-deps.sh installs it"
        );
    }
}
