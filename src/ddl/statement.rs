//! A small SQL lexer for captured commands: where statements end, and what their first words are.
//!
//! ```text
//!  "ALTER TABLE t ADD c int; -- note"   ─▶ statements: ["ALTER TABLE t ADD c int"]
//!  "ALTER TABLE a …; INSERT INTO b …"   ─▶ two statements: lsnpipe cannot tell which one fired
//!  "CREATE INDEX CONCURRENTLY i ON t …" ─▶ "CREATE INDEX i ON t …" (runs inside a transaction)
//! ```
//!
//! `current_query()` in an event trigger is the whole query string the client sent, so a string
//! with several statements cannot be replayed safely (the others would run twice, or run on
//! tables that are not replicated). The lexer knows what can hide a `;`: quoted strings (with
//! `''` and, in `E'…'`, backslash escapes), quoted identifiers, dollar quotes and comments (`/*`
//! nests). It does not parse SQL: it only needs to be right about those.

/// One lexical piece of a query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    /// A keyword or unquoted identifier (letters, digits, `_`, `$`).
    Word(&'a str),
    /// `;` outside any quote or comment.
    Semicolon,
    /// Whitespace or a comment.
    Blank,
    /// Anything else (quoted text, operators, numbers, punctuation).
    Other,
}

/// The statements of `text`, trimmed, without empty ones (only blanks and comments).
pub fn statements(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut substantive = false;
    for (token, range) in tokens(text) {
        match token {
            Token::Semicolon => {
                if substantive {
                    out.push(text[start..range.start].trim());
                }
                start = range.end;
                substantive = false;
            }
            Token::Blank => {}
            Token::Word(_) | Token::Other => substantive = true,
        }
    }
    if substantive {
        out.push(text[start..].trim());
    }
    out
}

/// Whether `statement` begins as a command tagged `tag` does (`ALTER TABLE`, `CREATE INDEX`):
/// its first word is the tag's first word, and the tag's other words follow within the next
/// few words (`CREATE UNIQUE INDEX`, `CREATE UNLOGGED TABLE`). A `DO` block or a function call
/// that ran the command does not.
pub fn starts_as(statement: &str, tag: &str) -> bool {
    let tag: Vec<&str> = tag.split_whitespace().collect();
    let words: Vec<&str> = tokens(statement)
        .filter(|(t, _)| *t != Token::Blank)
        .take(tag.len() + 3)
        .map(|(t, _)| match t {
            Token::Word(w) => w,
            _ => "",
        })
        .collect();
    let Some((first, rest)) = tag.split_first() else {
        return false;
    };
    if !words.first().is_some_and(|w| w.eq_ignore_ascii_case(first)) {
        return false;
    }
    let mut next = words.iter().skip(1);
    rest.iter()
        .all(|want| next.any(|w| w.eq_ignore_ascii_case(want)))
}

/// `statement` without a `CONCURRENTLY` among its first words (`CREATE INDEX CONCURRENTLY`,
/// `DROP INDEX CONCURRENTLY`): the target applies it inside its transaction, where the
/// concurrent form is refused.
pub fn without_concurrently(statement: &str) -> String {
    let words: Vec<_> = tokens(statement)
        .filter(|(t, _)| *t != Token::Blank)
        .take(4)
        .collect();
    let is = |i: usize, word: &str| {
        words
            .get(i)
            .is_some_and(|(t, _)| matches!(t, Token::Word(w) if w.eq_ignore_ascii_case(word)))
    };
    let index_at = if is(0, "create") && is(1, "unique") {
        2
    } else {
        1
    };
    if (is(0, "create") || is(0, "drop"))
        && is(index_at, "index")
        && is(index_at + 1, "concurrently")
    {
        let range = words[index_at + 1].1.clone();
        return format!("{}{}", &statement[..range.start], &statement[range.end..]);
    }
    statement.to_owned()
}

/// The tokens of `text` with their byte ranges. An unterminated quote or comment runs to the end.
fn tokens(text: &str) -> impl Iterator<Item = (Token<'_>, std::ops::Range<usize>)> {
    let bytes = text.as_bytes();
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= bytes.len() {
            return None;
        }
        let start = at;
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
        let token = match bytes[at] {
            b';' => {
                at += 1;
                Token::Semicolon
            }
            b if b.is_ascii_whitespace() => {
                while at < bytes.len() && bytes[at].is_ascii_whitespace() {
                    at += 1;
                }
                Token::Blank
            }
            b'-' if bytes.get(at + 1) == Some(&b'-') => {
                while at < bytes.len() && bytes[at] != b'\n' {
                    at += 1;
                }
                Token::Blank
            }
            b'/' if bytes.get(at + 1) == Some(&b'*') => {
                at = block_comment_end(bytes, at);
                Token::Blank
            }
            b'\'' => {
                at = quoted_end(bytes, at, b'\'', false);
                Token::Other
            }
            b'"' => {
                at = quoted_end(bytes, at, b'"', false);
                Token::Other
            }
            b'$' => match dollar_tag(bytes, at) {
                Some(tag_len) => {
                    at = dollar_end(bytes, at, tag_len);
                    Token::Other
                }
                None => {
                    at += 1;
                    Token::Other
                }
            },
            b if word(b) && !b.is_ascii_digit() => {
                while at < bytes.len() && word(bytes[at]) {
                    at += 1;
                }
                // E'…' (and e'…'): a string where a backslash escapes the quote.
                if at - start == 1
                    && matches!(bytes[start], b'E' | b'e')
                    && bytes.get(at) == Some(&b'\'')
                {
                    at = quoted_end(bytes, at, b'\'', true);
                    Token::Other
                } else {
                    Token::Word(&text[start..at])
                }
            }
            _ => {
                // Stay on a character boundary: skip the whole UTF-8 sequence.
                at += 1;
                while at < bytes.len() && (bytes[at] & 0xC0) == 0x80 {
                    at += 1;
                }
                Token::Other
            }
        };
        Some((token, start..at))
    })
}

/// The end of a quote opened at `at` by `quote`; a doubled quote stays inside.
fn quoted_end(bytes: &[u8], at: usize, quote: u8, backslash: bool) -> usize {
    let mut i = at + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if backslash => i += 2,
            b if b == quote => {
                if bytes.get(i + 1) == Some(&quote) {
                    i += 2;
                } else {
                    return i + 1;
                }
            }
            _ => i += 1,
        }
    }
    bytes.len()
}

/// The end of a `/* … */` comment opened at `at`; comments nest.
fn block_comment_end(bytes: &[u8], at: usize) -> usize {
    let mut depth = 0usize;
    let mut i = at;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    bytes.len()
}

/// The length of a dollar-quote opening tag at `at` (`$$`, `$body$`), if it is one (`$1` is a
/// parameter, not a quote).
fn dollar_tag(bytes: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    if bytes.get(i).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    while let Some(&b) = bytes.get(i) {
        if b == b'$' {
            return Some(i + 1 - at);
        }
        if !(b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80) {
            return None;
        }
        i += 1;
    }
    None
}

/// The end of a dollar-quoted string whose opening tag (`tag_len` bytes) starts at `at`.
fn dollar_end(bytes: &[u8], at: usize, tag_len: usize) -> usize {
    let tag = &bytes[at..at + tag_len];
    let body = at + tag_len;
    bytes[body..]
        .windows(tag_len)
        .position(|w| w == tag)
        .map_or(bytes.len(), |p| body + p + tag_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_statement_with_a_trailing_semicolon_and_comments() {
        assert_eq!(
            statements("  ALTER TABLE t ADD c int; -- why\n /* more */ ;"),
            ["ALTER TABLE t ADD c int"]
        );
        assert_eq!(
            statements("CREATE INDEX i ON t (a)"),
            ["CREATE INDEX i ON t (a)"]
        );
        assert!(statements(" ; -- nothing").is_empty());
    }

    #[test]
    fn semicolons_inside_quotes_and_comments_do_not_split() {
        let one = [
            "ALTER TABLE t ALTER v SET DEFAULT 'a;b'",
            "ALTER TABLE t ALTER v SET DEFAULT 'it''s;'",
            "ALTER TABLE t ALTER v SET DEFAULT E'\\';'",
            "ALTER TABLE \"we;ird\" ADD \"x\"\"y;\" int",
            "COMMENT ON TABLE t IS $$a;b$$",
            "COMMENT ON TABLE t IS $body$ $$ ; $body$",
            "ALTER TABLE t /* a /* nested ; */ comment ; */ ADD c int",
            "ALTER TABLE t ADD c int -- trailing ; comment",
            "ALTER TABLE a$b ADD c int",
        ];
        for text in one {
            assert_eq!(statements(text).len(), 1, "{text}");
        }
    }

    #[test]
    fn several_statements_are_seen_as_several() {
        assert_eq!(
            statements("ALTER TABLE a ADD c int; INSERT INTO b VALUES (';')"),
            ["ALTER TABLE a ADD c int", "INSERT INTO b VALUES (';')"]
        );
        // A standard string ends at the quote even after a backslash.
        assert_eq!(statements("SELECT 'a\\'; SELECT 1").len(), 2);
        assert_eq!(statements("SELECT $1; SELECT 2").len(), 2);
    }

    #[test]
    fn unterminated_quotes_run_to_the_end_without_panicking() {
        for text in [
            "SELECT 'abc",
            "SELECT \"x",
            "SELECT $a$ x",
            "/* open",
            "E'\\",
            "$",
            "é;ü",
        ] {
            let _ = statements(text);
            let _ = starts_as(text, "ALTER TABLE");
            let _ = without_concurrently(text);
        }
        assert_eq!(statements("é;ü"), ["é", "ü"]);
    }

    #[test]
    fn a_command_is_recognised_by_its_first_words() {
        assert!(starts_as("alter table t rename a to b", "ALTER TABLE"));
        assert!(starts_as("CREATE UNIQUE INDEX i ON t (a)", "CREATE INDEX"));
        assert!(starts_as(
            "/* x */ CREATE UNLOGGED TABLE t (a int)",
            "CREATE TABLE"
        ));
        assert!(!starts_as(
            "DO $$ BEGIN ALTER TABLE t ADD c int; END $$",
            "ALTER TABLE"
        ));
        assert!(!starts_as("SELECT migrate()", "ALTER TABLE"));
        assert!(!starts_as("ALTER INDEX i RENAME TO j", "ALTER TABLE"));
        assert!(!starts_as("", "ALTER TABLE"));
    }

    #[test]
    fn concurrently_is_dropped_from_index_commands_only() {
        assert_eq!(
            without_concurrently("CREATE INDEX CONCURRENTLY i ON t (a)"),
            "CREATE INDEX  i ON t (a)"
        );
        assert_eq!(
            without_concurrently("drop index concurrently if exists i"),
            "drop index  if exists i"
        );
        let kept = "ALTER TABLE t ADD concurrently int";
        assert_eq!(without_concurrently(kept), kept);
        assert_eq!(
            without_concurrently("CREATE UNIQUE INDEX CONCURRENTLY i ON t (a)"),
            "CREATE UNIQUE INDEX  i ON t (a)"
        );
        let comment = "COMMENT ON TABLE t IS 'concurrently'";
        assert_eq!(without_concurrently(comment), comment);
    }
}
