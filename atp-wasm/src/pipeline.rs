//! The inbound verification pipeline. CONTRACT: filled in next.
