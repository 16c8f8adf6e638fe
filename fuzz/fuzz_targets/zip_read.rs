//! Arbitrary bytes as an uploaded zip archive. See
//! `imgnorm::fuzzing::zip_read`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| imgnorm::fuzzing::zip_read(data));
