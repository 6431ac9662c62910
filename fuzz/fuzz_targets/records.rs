//! `cargo fuzz run records`: see [`atp_fuzz::records`] (fuzz/targets.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atp_fuzz::records(data));
