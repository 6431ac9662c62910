//! Signing and verifying messages (protocol.md §4). CONTRACT: filled in next.
