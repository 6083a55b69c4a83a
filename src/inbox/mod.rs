//! Inbound mail: the IMAP watcher and the classifier.
//!
//! The classifier is pure (message bytes in, verdict out) so it can be tested
//! on golden files and real-world corpora; the watcher only moves bytes from
//! the server to the classifier and the verdicts to the store.

pub mod classify;
pub mod watch;
