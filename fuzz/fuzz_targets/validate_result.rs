//! Arbitrary worker results through the master's checks. See
//! `imgnorm::fuzzing::validate_result`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| imgnorm::fuzzing::validate_result(data));
