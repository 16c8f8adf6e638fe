//! A BMP or a GIF (first byte: even BMP, odd GIF) straight to this
//! project's own readers. See `imgnorm::fuzzing::bmp_gif_decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| imgnorm::fuzzing::bmp_gif_decode(data));
