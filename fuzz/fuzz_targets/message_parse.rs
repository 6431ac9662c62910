//! `cargo fuzz run message_parse`: see [`atp_fuzz::message_parse`] (fuzz/targets.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atp_fuzz::message_parse(data));
