//! SQL quoting, the one place: identifiers in double quotes, literals in single quotes, each
//! with the quote character doubled. Used for SQL and for replication commands alike.

/// A double-quoted identifier; `"` inside is doubled. Works in SQL and in replication commands.
pub fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    push_ident(&mut out, name);
    out
}

/// [`quote_ident`] appended to `out`, for statement text built in one buffer.
pub fn push_ident(out: &mut String, name: &str) {
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
}

/// A single-quoted literal; `'` inside is doubled. No `E''` form: the replication command
/// scanner does not know it, and backslashes stay literal with standard strings.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("slot"), "\"slot\"");
        assert_eq!(quote_ident("we\"ird slot"), "\"we\"\"ird slot\"");
        let mut out = String::from("x.");
        push_ident(&mut out, "a\"b");
        assert_eq!(out, "x.\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(r"back\slash"), r"'back\slash'");
    }
}
