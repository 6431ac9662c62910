//! `cargo fuzz run pipeline`: see [`atp_fuzz::pipeline`] (fuzz/targets.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atp_fuzz::pipeline(data));
