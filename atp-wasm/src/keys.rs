//! Ed25519 domain keys (protocol.md §4, §8.7). CONTRACT: filled in next.
