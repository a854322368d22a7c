//! How an error reaches an operator: the whole chain of causes on one line, each said once.

use std::error::Error;

/// `err` and its sources, joined with ": ", skipping a cause whose text is already included
/// (layers that print their source inline would otherwise repeat it).
pub fn chain(err: &dyn Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("the server reported an error")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("ERROR: slot is active (SQLSTATE 55006)")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    #[error("source: {0}")]
    struct Inline(#[source] Inner);

    #[test]
    fn joins_causes_once() {
        assert_eq!(
            chain(&Outer(Inner)),
            "the server reported an error: ERROR: slot is active (SQLSTATE 55006)"
        );
        assert_eq!(
            chain(&Inline(Inner)),
            "source: ERROR: slot is active (SQLSTATE 55006)"
        );
    }
}
