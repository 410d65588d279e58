//! `oxserve::fuzzing::model_config` on arbitrary bytes: it must return, never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = oxserve::fuzzing::model_config(data);
});
