//! `cargo fuzz run canonical`: see [`atp_fuzz::canonical`] (fuzz/targets.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atp_fuzz::canonical(data));
