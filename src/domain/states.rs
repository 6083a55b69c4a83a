//! The closed vocabularies the store persists as text.

macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name { $(#[serde(rename = $text)] $variant),* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)* _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// Where an enrollment stands. `active` and `paused` are the live states:
    /// a lead has at most one live enrollment.
    EnrollmentState {
        Active = "active",
        Paused = "paused",
        Replied = "replied",
        Bounced = "bounced",
        Unsubscribed = "unsubscribed",
        Completed = "completed",
        Archived = "archived",
        Failed = "failed",
    }
);

impl EnrollmentState {
    pub fn is_live(self) -> bool {
        matches!(self, EnrollmentState::Active | EnrollmentState::Paused)
    }
}

text_enum!(
    /// One dated entry of a lead's history. Never deleted.
    TouchKind {
        EmailSent = "email_sent",
        Reply = "reply",
        AutoReply = "auto_reply",
        Bounce = "bounce",
        Complaint = "complaint",
        Unsubscribe = "unsubscribe",
        StageChange = "stage_change",
        Note = "note",
        Call = "call",
        Meeting = "meeting",
        TaskDone = "task_done",
        TaskSkipped = "task_skipped",
        LastChance = "last_chance",
        Archived = "archived",
        SendFailed = "send_failed",
        SendUnknown = "send_unknown",
        Enrolled = "enrolled",
        Paused = "paused",
        Resumed = "resumed",
        Unenrolled = "unenrolled",
        Suppressed = "suppressed",
        Stale = "stale",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips() {
        for s in EnrollmentState::ALL {
            assert_eq!(EnrollmentState::parse(s.as_str()), Some(*s));
        }
        for k in TouchKind::ALL {
            assert_eq!(TouchKind::parse(k.as_str()), Some(*k));
        }
        assert_eq!(EnrollmentState::parse("nope"), None);
    }
}
