//! Retry policy. CONTRACT: filled in next.
