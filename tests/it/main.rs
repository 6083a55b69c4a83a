//! All integration tests live in this one binary so that the crate and the
//! test dependencies are linked once, not once per file.
//!
//! `support/` starts the real servers the tests talk to (Dovecot, PostgreSQL,
//! an SMTP server); `rig.rs` checks that those helpers themselves work, so
//! that a failure elsewhere points at cadence rather than at the rig.
//! `fixtures.rs` builds the standard project the feature tests run against.

mod api;
mod board;
mod classify;
mod cli;
mod deploy;
mod engine;
mod fixtures;
mod hygiene;
mod inbox;
mod mailer;
mod reliability;
mod reload;
mod report;
mod rig;
mod scale;
mod support;
mod tasks;
mod watch;
