//! The run loop's decisions that need no server: which errors retry, how the pause grows.

use super::*;
use crate::apply::ApplyError;
use crate::pgoutput::DecodeError;

#[test]
fn a_message_the_decoder_rejects_stops_the_run_instead_of_looping() {
    // The source would send the same bytes again on every new session.
    let err = RunError::Decode(DecodeError::UnknownTag {
        what: "message",
        tag: b'?',
    });
    assert_eq!(error_policy::run(&err).action, Action::Fatal);
    let text = crate::report::failure(&err);
    assert!(text.contains("report it"), "{text}");
}

#[test]
fn backoff_doubles_up_to_three_seconds() {
    let mut b = Backoff::new();
    let pauses: Vec<u64> = (0..5).map(|_| b.next().as_secs()).collect();
    assert_eq!(pauses, [1, 2, 3, 3, 3]);
}

#[test]
fn a_read_only_or_full_target_is_retried_and_reported_as_such() {
    let unwritable = |code: &str| {
        RunError::Apply(ApplyError::Data {
            table: "t".into(),
            operation: crate::apply::Operation::Insert,
            source: crate::apply::TargetError {
                code: code.into(),
                message: "m".into(),
                constraint: None,
                column: None,
            },
        })
    };
    for code in ["25006", "53100"] {
        let verdict = error_policy::run(&unwritable(code));
        assert_eq!(verdict.action, Action::Retry, "{code}");
        assert_eq!(verdict.kind.as_str(), "target_unwritable");
    }
    // A constraint violation needs an operator, not a retry.
    assert_eq!(
        error_policy::run(&unwritable("23505")).action,
        Action::Operator
    );
    let stalled = RunError::TargetTimeout {
        doing: "committing",
        seconds: 10,
    };
    assert_eq!(error_policy::run(&stalled).action, Action::Retry);
    assert!(stalled.to_string().contains("10 s"), "{stalled}");
}
