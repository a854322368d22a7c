//! The database side of `verify` and `cutover`: sessions whose output does not depend on the
//! server's or the role's settings, the source's position, and waiting until the target has
//! applied up to a source position.
//!
//! ```text
//!  source: pg_current_wal_lsn() ─▶ L            target: lsnpipe.progress(slot).lsn ≥ L ?
//!                                                  no, slot streaming    ─▶ poll again
//!                                                  no, slot idle (no run) ─▶ anything published
//!                                                     pending in the slot? no: caught up
//! ```

use std::time::{Duration, Instant};

use crate::Lsn;
use crate::ops::{OpsError, SideSession};
use crate::wire::quote_ident;

/// Settings that shape the text of values beyond the ones every lsnpipe session pins
/// (`wire::SESSION_SETTINGS`): `timestamptz` prints in the session's time zone, `bytea` in the
/// session's format, `money` in the session's locale.
const VERIFY_SETTINGS: &str =
    "SET TimeZone = 'UTC'; SET bytea_output = 'hex'; SET lc_monetary = 'C'";

/// A session whose value texts are the same on both sides.
pub(crate) async fn connect(name: &'static str, conn: &str) -> Result<SideSession, OpsError> {
    let side = SideSession::connect(name, conn).await?;
    side.client
        .batch_execute(VERIFY_SETTINGS)
        .await
        .map_err(side.sql("pin the session's output settings"))?;
    Ok(side)
}

/// The source's current WAL insert position.
pub(crate) async fn current_lsn(source: &SideSession) -> Result<Lsn, OpsError> {
    let text: String = source
        .client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .map_err(source.sql("read the current WAL position"))?
        .get(0);
    parse(&text)
}

pub(crate) fn parse(text: &str) -> Result<Lsn, OpsError> {
    text.parse()
        .map_err(|_| OpsError::Refused(format!("the server returned an unreadable LSN {text:?}")))
}

/// The position the target has applied for `slot`, if it has a progress row.
pub(crate) async fn applied(target: &SideSession, slot: &str) -> Result<Option<Lsn>, OpsError> {
    let exists: bool = target
        .client
        .query_one("SELECT to_regclass('lsnpipe.progress') IS NOT NULL", &[])
        .await
        .map_err(target.sql("look for lsnpipe.progress"))?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = target
        .client
        .query_opt(
            "SELECT lsn::text FROM lsnpipe.progress WHERE slot = $1",
            &[&slot],
        )
        .await
        .map_err(target.sql("read lsnpipe.progress"))?;
    row.map(|r| parse(&r.get::<_, String>(0))).transpose()
}

/// Whether a `lsnpipe run` (or any consumer) streams the slot now; `None` if there is no slot.
pub(crate) async fn slot_active_pid(
    source: &SideSession,
    slot: &str,
) -> Result<Option<Option<i32>>, OpsError> {
    let found = crate::source::SlotInfo::read(&source.client, slot)
        .await
        .map_err(source.sql("read the slot"))?;
    Ok(found.map(|s| s.active_pid))
}

/// Changes of published tables the slot holds that no one has received: only asked when no
/// consumer streams the slot (peeking needs the slot to itself, and consumes nothing).
pub(crate) async fn pending_changes(
    source: &SideSession,
    slot: &str,
    publication: &str,
) -> Result<i64, OpsError> {
    // Inserts, updates, deletes and truncates only: older servers send empty transactions.
    let row = source
        .client
        .query_one(
            "SELECT count(*) FILTER (WHERE get_byte(data, 0) IN (73, 85, 68, 84))::int8 \
             FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, \
               'proto_version', '1', 'publication_names', $2)",
            &[&slot, &quote_ident(publication)],
        )
        .await
        .map_err(source.sql("look into the slot for changes not yet streamed"))?;
    Ok(row.get(0))
}

/// Wait until the target has applied everything up to `lsn` for `slot`. When no consumer
/// streams the slot and it holds nothing for the publication, the target is as current as it
/// can be, and that counts as caught up.
pub(crate) async fn wait_for_target(
    source: &SideSession,
    target: &SideSession,
    slot: &str,
    publication: &str,
    lsn: Lsn,
    timeout: Duration,
) -> Result<(), OpsError> {
    let start = Instant::now();
    let mut last_slot_check = None::<Instant>;
    loop {
        let at = applied(target, slot).await?;
        if at.is_some_and(|a| a >= lsn) {
            return Ok(());
        }
        if last_slot_check.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) {
            last_slot_check = Some(Instant::now());
            match slot_active_pid(source, slot).await? {
                None => {
                    return Err(OpsError::Refused(format!(
                        "slot {slot} does not exist on the source: the target cannot be \
                         compared while replication runs without it (see `lsnpipe status`)"
                    )));
                }
                Some(None) if at.is_some() => {
                    if pending_changes(source, slot, publication).await? == 0 {
                        return Ok(());
                    }
                }
                Some(_) => {}
            }
        }
        if start.elapsed() >= timeout {
            let at = at.map_or("nothing (no progress row)".to_owned(), |a| a.to_string());
            return Err(OpsError::Refused(format!(
                "the target has applied {at} for slot {slot}, not yet {lsn}, after {} s: is \
                 `lsnpipe run` streaming this slot? (`lsnpipe status` shows the lag; a longer \
                 --wait-secs waits longer)",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lsns_parse_or_say_what_was_wrong() {
        assert!(super::parse("0/16B3748").is_ok());
        let err = super::parse("nope").unwrap_err();
        assert!(err.to_string().contains("unreadable LSN"), "{err}");
    }
}
