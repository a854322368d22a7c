//! How an error reaches an operator: the whole chain of causes on one line, each said once.
//!
//! lsnpipe's own errors never print their source in their message (nor do tokio-postgres's: "db
//! error", "error connecting to server"); the source is reached through [`Error::source`] and
//! printed here, after the message, once.

use std::error::Error;

use crate::error_policy::{self, Action};

/// `err` and its sources, joined with ": ".
pub fn chain(err: &(dyn Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

/// The line an operator reads when a command ends with `err`: its chain, and for an error
/// lsnpipe cannot handle ([`Action::Fatal`]) how to report it. Every other error's message
/// already says what to do.
pub fn failure(err: &(dyn Error + 'static)) -> String {
    let text = chain(err);
    match error_policy::of_chain(err) {
        Some(Action::Fatal) => format!("{text}; {}", error_policy::FATAL_HINT),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgoutput::DecodeError;
    use crate::pipeline::RunError;
    use crate::source::SourceError;
    use crate::wire::{ServerError, WireError};

    #[derive(Debug, thiserror::Error)]
    #[error("the server reported an error")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("ERROR: slot is active (SQLSTATE 55006)")]
    struct Inner;

    #[test]
    fn joins_each_cause_once() {
        assert_eq!(
            chain(&Outer(Inner)),
            "the server reported an error: ERROR: slot is active (SQLSTATE 55006)"
        );
    }

    #[test]
    fn a_missing_slot_reads_from_the_layer_down_to_what_to_do() {
        let err = RunError::Source(SourceError::NoSlot("s".into()));
        let text = failure(&err);
        assert!(
            text.starts_with("source: replication slot \"s\" does not exist on the source: run with --create-slot"),
            "{text}"
        );
    }

    #[test]
    fn a_server_error_is_said_once() {
        let err = RunError::Target(WireError::Server(Box::new(ServerError {
            severity: "FATAL".into(),
            code: "57P04".into(),
            message: "database \"d\" was dropped".into(),
            detail: None,
            hint: None,
        })));
        let text = failure(&err);
        assert_eq!(text.matches("was dropped").count(), 1, "{text}");
        assert_eq!(
            text,
            "target: FATAL: database \"d\" was dropped (SQLSTATE 57P04)"
        );
    }

    #[test]
    fn a_fatal_error_says_to_report_it() {
        let err = RunError::Decode(DecodeError::UnknownTag {
            what: "message",
            tag: b'?',
        });
        let text = failure(&err);
        assert!(
            text.starts_with("malformed message from the source; lsnpipe stops rather than skip it (the slot keeps it): message: unknown tag 0x3f"),
            "{text}"
        );
        assert!(text.ends_with(error_policy::FATAL_HINT), "{text}");
        assert!(text.contains("report it"), "{text}");
    }

    #[test]
    fn a_connection_failure_keeps_its_cause() {
        let err = WireError::Connect {
            target: "db:5432".into(),
            source: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
        };
        assert_eq!(
            chain(&err),
            "cannot connect to db:5432 (check that the server runs and accepts connections \
             there): refused"
        );
    }
}
