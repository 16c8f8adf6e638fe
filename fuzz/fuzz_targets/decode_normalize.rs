//! Arbitrary bytes through the engine's decode-and-normalize path (first
//! byte: options and file extension). See `imgnorm::fuzzing::decode_normalize`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| imgnorm::fuzzing::decode_normalize(data));
