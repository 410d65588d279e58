//! `oxserve::fuzzing::infer_request` on arbitrary bytes: it must return, never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = oxserve::fuzzing::infer_request(data);
});
