//! ATK, the domain key records (protocol.md §5.3).
//!
//! CONTRACT (filled in by the records work).
