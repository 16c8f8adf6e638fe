//! Arbitrary bytes through the JPEG decoder (libjpeg-turbo behind the C
//! shim). See `imgnorm::fuzzing::jpeg_decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| imgnorm::fuzzing::jpeg_decode(data));
