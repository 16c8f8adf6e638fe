//! Compiles imgnorm's JPEG shim, as crates/imgnorm-engine/build.rs does.
fn main() {
    let shim = "../../crates/imgnorm-engine/csrc/jpeg_shim.c";
    println!("cargo:rerun-if-changed={shim}");
    let include = std::env::var_os("DEP_JPEG_INCLUDE").expect("DEP_JPEG_INCLUDE from mozjpeg-sys");
    let mut build = cc::Build::new();
    build.file(shim);
    for dir in std::env::split_paths(&include) {
        build.include(dir);
    }
    build.compile("imgnorm_jpeg_shim");
}
