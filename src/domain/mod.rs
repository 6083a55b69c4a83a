//! Domain values of cadence: parsed at the boundary, valid afterwards.
//!
//! Nothing here touches the network, the database or the clock. A value of
//! these types (an [`EmailAddress`], a [`Wait`], a [`LeadInput`]) has already
//! passed validation, so the engine and the mailer never re-check it, and lead
//! data can never carry a CR or LF into a mail header.

mod email;
mod lead;
mod states;
pub mod token;
mod wait;

pub use email::{EmailAddress, EmailError};
pub use lead::{check_field, parse_timezone, FieldError, LeadInput, LEAD_COLUMNS};
pub use states::{EnrollmentState, TouchKind};
pub use wait::{Wait, WaitError};
