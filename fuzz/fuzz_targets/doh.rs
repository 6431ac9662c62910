//! `cargo fuzz run doh`: see [`atp_fuzz::doh`] (fuzz/targets.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atp_fuzz::doh(data));
