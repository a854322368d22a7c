//! The captured command, as the source's event trigger writes it into the WAL
//! (`pg_logical_emit_message(true, 'lsnpipe.ddl', <json>)`), and what the target runs from it.
//!
//! ```json
//! {"version": 1, "tag": "ALTER TABLE", "command": "ALTER TABLE t RENAME a TO b",
//!  "search_path": "\"$user\", public", "publications": ["pub"],
//!  "objects": [{"type": "table column", "identity": "public.t.b", "schema": "public", "table": "t"}],
//!  "created": []}
//! ```

use serde::Deserialize;

use super::statement;

/// The prefix of lsnpipe's logical decoding messages.
pub const PREFIX: &str = "lsnpipe.ddl";

/// One DDL command that touched a published table on the source.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CapturedDdl {
    pub version: u32,
    /// The command tag of the statement that fired (`ALTER TABLE`, `CREATE INDEX`).
    pub tag: String,
    /// `current_query()`: the whole query string the client sent.
    pub command: String,
    /// The `search_path` the command ran with, set for it on the target.
    pub search_path: String,
    /// Publications that include a table the command touched (or created).
    #[serde(default)]
    pub publications: Vec<String>,
    #[serde(default)]
    pub objects: Vec<DdlObject>,
    /// Tables the command created (under a `FOR ALL TABLES` or `TABLES IN SCHEMA` publication).
    #[serde(default)]
    pub created: Vec<TableName>,
}

/// An object the command touched, with the published table it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DdlObject {
    #[serde(rename = "type")]
    pub kind: String,
    pub identity: String,
    pub schema: String,
    pub table: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
pub struct TableName {
    pub schema: String,
    pub table: String,
}

/// Why a captured command cannot be replayed as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DdlError {
    #[error(
        "the message is not a DDL capture this lsnpipe reads ({0}); was the trigger installed by \
         a newer lsnpipe?"
    )]
    Unreadable(String),
    #[error(
        "the query string holds {count} statements, and lsnpipe cannot tell which one is the \
         {tag} it captured (send DDL on published tables as one statement per query)"
    )]
    MultiStatement { count: usize, tag: String },
    #[error(
        "the {tag} ran inside another command (a DO block or a function), which lsnpipe does \
         not replay"
    )]
    NotTopLevel { tag: String },
}

impl CapturedDdl {
    /// The message's content, as the trigger of this version writes it.
    pub fn parse(content: &[u8]) -> Result<Self, DdlError> {
        let ddl: CapturedDdl =
            serde_json::from_slice(content).map_err(|e| DdlError::Unreadable(e.to_string()))?;
        if ddl.version != 1 {
            return Err(DdlError::Unreadable(format!("version {}", ddl.version)));
        }
        Ok(ddl)
    }

    /// Whether the command touched a table of `publication` (other publications' DDL, in the
    /// same database, is for other consumers).
    pub fn concerns(&self, publication: &str) -> bool {
        self.publications.iter().any(|p| p == publication)
    }

    /// The statement the target runs: the query string's only statement, which must be the
    /// captured command itself (`CONCURRENTLY` dropped: it runs inside a transaction).
    pub fn statement(&self) -> Result<String, DdlError> {
        let statements = statement::statements(&self.command);
        let [only] = statements.as_slice() else {
            return Err(DdlError::MultiStatement {
                count: statements.len(),
                tag: self.tag.clone(),
            });
        };
        if !statement::starts_as(only, &self.tag) {
            return Err(DdlError::NotTopLevel {
                tag: self.tag.clone(),
            });
        }
        Ok(statement::without_concurrently(only))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captured(command: &str, tag: &str) -> CapturedDdl {
        let json = serde_json::json!({
            "version": 1, "tag": tag, "command": command, "search_path": "public",
            "publications": ["pub"],
            "objects": [{"type": "table", "identity": "public.t", "schema": "public", "table": "t"}],
            "created": [],
        });
        CapturedDdl::parse(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn a_single_statement_is_replayed_as_sent() {
        let ddl = captured("ALTER TABLE t RENAME a TO b;", "ALTER TABLE");
        assert_eq!(ddl.statement().unwrap(), "ALTER TABLE t RENAME a TO b");
        assert!(ddl.concerns("pub"));
        assert!(!ddl.concerns("other"));
        assert_eq!(ddl.objects[0].table, "t");
        let index = captured("CREATE INDEX CONCURRENTLY i ON t (a)", "CREATE INDEX");
        assert_eq!(index.statement().unwrap(), "CREATE INDEX  i ON t (a)");
    }

    #[test]
    fn several_statements_or_a_nested_command_are_refused_by_name() {
        let multi = captured("ALTER TABLE t ADD c int; UPDATE t SET c = 1", "ALTER TABLE");
        assert_eq!(
            multi.statement(),
            Err(DdlError::MultiStatement {
                count: 2,
                tag: "ALTER TABLE".into()
            })
        );
        let nested = captured("DO $$ BEGIN ALTER TABLE t ADD c int; END $$", "ALTER TABLE");
        assert!(matches!(
            nested.statement(),
            Err(DdlError::NotTopLevel { .. })
        ));
    }

    #[test]
    fn a_message_frame_from_the_stream_carries_the_capture() {
        use bytes::{BufMut, BytesMut};

        use crate::pgoutput::{self, DecodeContext, LogicalMessage};

        let content =
            br#"{"version": 1, "tag": "CREATE INDEX", "command": "CREATE INDEX i ON t (a)",
            "search_path": "public", "publications": ["pub"]}"#;
        let mut frame = BytesMut::new();
        frame.put_u8(b'M');
        frame.put_u8(1); // transactional
        frame.put_u64(0x16_B374_D848);
        frame.put_slice(b"lsnpipe.ddl\0");
        frame.put_u32(u32::try_from(content.len()).unwrap());
        frame.put_slice(content);
        let frame = frame.freeze();
        let LogicalMessage::Message(m) =
            pgoutput::decode(frame.clone(), DecodeContext::default()).unwrap()
        else {
            panic!("not a Message");
        };
        assert!(m.transactional());
        assert_eq!(m.prefix(), PREFIX);
        assert_eq!(m.lsn.to_string(), "16/B374D848");
        let ddl = CapturedDdl::parse(&m.content).unwrap();
        assert_eq!(ddl.statement().unwrap(), "CREATE INDEX i ON t (a)");
        // Cut anywhere, the frame is an error, never a panic.
        for end in 0..frame.len() {
            assert!(pgoutput::decode(frame.slice(..end), DecodeContext::default()).is_err());
        }
    }

    #[test]
    fn unreadable_content_is_an_error_not_a_panic() {
        for content in [
            &b""[..],
            b"{",
            b"\xff\xfe",
            b"{\"version\": 2, \"tag\": \"x\", \"command\": \"x\", \"search_path\": \"\"}",
            b"{\"version\": 1}",
            b"[1, 2]",
        ] {
            assert!(
                matches!(CapturedDdl::parse(content), Err(DdlError::Unreadable(_))),
                "{content:?}"
            );
        }
    }
}
