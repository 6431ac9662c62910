//! ATS, the sender authorization policy (protocol.md §5.2).
//!
//! CONTRACT (filled in by the records work).
