//! The integration tests: one binary, so the crate links once. `support`
//! starts real servers (SMTP here) on loopback.

mod mailer;
mod support;
