//! Mailbox sync state and inbound de-duplication.
