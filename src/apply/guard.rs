//! One lsnpipe per slot on a target: a session-level advisory lock on the target database,
//! held for a run's session by a connection of its own.
//!
//! The slot guards the stream (its walsender holds it), but not the initial copy: the
//! walsender lets go of the slot once it is created, so a second `run` started during the
//! copy would resume it beside the first. The lock covers the whole session, copy included.
//!
//! A session whose link went silent lives on in the server until it notices the link is gone
//! (hours, without keepalives): its lock, an open transaction's row locks (the progress row).
//! So the lock session's `application_name` carries a token of this process, and the session's
//! other target connections a tag of the slot ([`RunGuard::tagged`]). A new session of the same
//! process ends its own ghost lock session instead of waiting on it; whoever takes the lock
//! ends every other session tagged for the slot, since none of them can belong to a live run.
//!
//! ```text
//!  session start ─▶ pg_try_advisory_lock(key of slot) ─┬─ taken ─▶ end the slot's tagged ghosts ─▶ copy, stream
//!                                                       ├─ held by this process's token ─▶ end it, try again
//!                                                       └─ held by another ─▶ Held (retried)
//!  every 200 ms tick: is the lock session still there? (a query every HEARTBEAT)
//! ```

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::wire::{self, ConnConfig, SqlConnectionGuard, WireError};

/// How long a terminated ghost session is given to go (`pg_terminate_backend`'s timeout).
const TERMINATE_WAIT_MS: i64 = 5_000;

/// How often the lock session is asked whether it is still there. A session that lost it
/// (its link died) must stop: another run may take the lock.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// The lock, held until dropped (the connection ends with it, and the lock with the
/// connection).
#[derive(Debug)]
pub struct RunGuard {
    client: Client,
    _connection: SqlConnectionGuard,
    tag: String,
    last_heartbeat: Instant,
}

impl RunGuard {
    /// `target` with the `application_name` that marks a connection as this slot's run's: the
    /// session's other target connections use it, so a later holder of the lock can end them
    /// should they outlive their link.
    pub fn tagged(&self, target: &ConnConfig) -> ConnConfig {
        target.clone().with_application_name(&self.tag)
    }

    /// Whether the lock is still held: an error once the lock session is gone, or does not
    /// answer within `timeout` (asked at most every [`HEARTBEAT`]).
    pub async fn still_held(&mut self, timeout: Duration) -> Result<(), GuardError> {
        if self.last_heartbeat.elapsed() < HEARTBEAT && !self.client.is_closed() {
            return Ok(());
        }
        self.last_heartbeat = Instant::now();
        let query = self.client.simple_query("SELECT 1");
        // No --target-timeout: no limit here either.
        let answer = if timeout.is_zero() {
            Ok(query.await)
        } else {
            tokio::time::timeout(timeout, query).await
        };
        match answer {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(GuardError::Lost(format!("it ended: {e}"))),
            Err(_) => Err(GuardError::Lost(format!(
                "it did not answer for {} s",
                timeout.as_secs()
            ))),
        }
    }
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error(
        "another lsnpipe is running for slot {slot:?} on this target ({holder}); stop it, or \
         leave this one waiting to take over when it stops"
    )]
    Held { slot: String, holder: String },
    #[error("target session for the lock that keeps one lsnpipe per slot")]
    Target(#[source] WireError),
    #[error(
        "lost the target session that holds the lock keeping one lsnpipe per slot ({0}); \
         stopping this session before another lsnpipe can take over"
    )]
    Lost(String),
}

/// Take the lock for `slot` on the target, ending this process's own stale lock session if
/// that is what holds it.
pub async fn acquire(target: &ConnConfig, slot: &str) -> Result<RunGuard, GuardError> {
    let name = application_name();
    let config = target.clone().with_application_name(&name);
    let (client, connection) = wire::connect_sql_guarded(&config)
        .await
        .map_err(GuardError::Target)?;
    let key = lock_key(slot);
    let sql = |e| GuardError::Target(WireError::Sql(e));
    // Twice: once more after ending a ghost (or after a holder let go in between).
    for _ in 0..2 {
        let row = client
            .query_one("SELECT pg_catalog.pg_try_advisory_lock($1)", &[&key])
            .await
            .map_err(sql)?;
        if row.try_get::<_, bool>(0).map_err(sql)? {
            let tag = run_tag(key);
            end_ghosts(&client, &tag).await.map_err(sql)?;
            return Ok(RunGuard {
                client,
                _connection: connection,
                tag,
                last_heartbeat: Instant::now(),
            });
        }
        let Some(holder) = holder(&client, key).await.map_err(sql)? else {
            continue;
        };
        if holder.application_name != name {
            return Err(GuardError::Held {
                slot: slot.to_owned(),
                holder: holder.describe(),
            });
        }
        tracing::warn!(
            pid = holder.pid,
            "an earlier session of this lsnpipe still holds its target session (its link went \
             silent); ending it"
        );
        let ended = client
            .query_one(
                "SELECT pg_catalog.pg_terminate_backend($1, $2)",
                &[&holder.pid, &TERMINATE_WAIT_MS],
            )
            .await;
        if let Err(e) = ended {
            return Err(GuardError::Held {
                slot: slot.to_owned(),
                holder: format!("{}; this process could not end it: {e}", holder.describe()),
            });
        }
    }
    Err(GuardError::Held {
        slot: slot.to_owned(),
        holder: "the lock was taken again as soon as it was free".to_owned(),
    })
}

/// End the target sessions tagged for this slot's run: the lock is ours, so none belongs to a
/// live run (each is what a session left behind on a link that died). They may hold row locks
/// the new session would wait on, for as long as the server keeps them.
async fn end_ghosts(client: &Client, tag: &str) -> Result<(), tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT pid FROM pg_catalog.pg_stat_activity \
             WHERE datname = pg_catalog.current_database() AND application_name = $1 \
               AND pid <> pg_catalog.pg_backend_pid()",
            &[&tag],
        )
        .await?;
    for row in rows {
        let pid: i32 = row.try_get(0)?;
        let ended = client
            .query_one(
                "SELECT pg_catalog.pg_terminate_backend($1, $2)",
                &[&pid, &TERMINATE_WAIT_MS],
            )
            .await;
        match ended {
            Ok(_) => tracing::warn!(
                pid,
                "ended a target session an earlier run for this slot left behind (its link \
                 went silent)"
            ),
            Err(e) => tracing::warn!(
                pid,
                "could not end a target session an earlier run for this slot left behind: {e}"
            ),
        }
    }
    Ok(())
}

/// Who holds `slot`'s lock on the target `client` is connected to, described for a message,
/// or `None` when no run holds it.
pub async fn running(client: &Client, slot: &str) -> Result<Option<String>, tokio_postgres::Error> {
    Ok(holder(client, lock_key(slot)).await?.map(|h| h.describe()))
}

/// The session that holds the lock, as `pg_stat_activity` shows it.
struct Holder {
    pid: i32,
    application_name: String,
    client: Option<String>,
    since: Option<String>,
}

impl Holder {
    fn describe(&self) -> String {
        let mut text = format!("target backend PID {}", self.pid);
        if !self.application_name.is_empty() {
            text.push_str(&format!(", application_name {:?}", self.application_name));
        }
        if let Some(client) = &self.client {
            text.push_str(&format!(", from {client}"));
        }
        if let Some(since) = &self.since {
            text.push_str(&format!(", connected since {since}"));
        }
        text
    }
}

async fn holder(client: &Client, key: i64) -> Result<Option<Holder>, tokio_postgres::Error> {
    // A bigint advisory key shows as its high and low halves, with objsubid 1.
    let bits = u64::from_ne_bytes(key.to_ne_bytes());
    let (high, low) = (
        i64::from_ne_bytes((bits >> 32).to_ne_bytes()),
        i64::from_ne_bytes((bits & 0xffff_ffff).to_ne_bytes()),
    );
    let row = client
        .query_opt(
            "SELECT a.pid, coalesce(a.application_name, ''), host(a.client_addr), \
                    a.backend_start::text \
             FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
               AND l.database = (SELECT oid FROM pg_catalog.pg_database \
                                 WHERE datname = pg_catalog.current_database()) \
               AND l.classid::bigint = $1 AND l.objid::bigint = $2 \
             LIMIT 1",
            &[&high, &low],
        )
        .await?;
    row.map(|r| {
        Ok(Holder {
            pid: r.try_get(0)?,
            application_name: r.try_get(1)?,
            client: r.try_get(2)?,
            since: r.try_get(3)?,
        })
    })
    .transpose()
}

/// The lock's key for `slot`: a stable 64-bit hash (FNV-1a), the same in every lsnpipe.
fn lock_key(slot: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in b"lsnpipe run\0".iter().chain(slot.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// `lsnpipe run <key>`: the `application_name` of a run's target connections for the slot.
fn run_tag(key: i64) -> String {
    format!("lsnpipe run {key:016x}")
}

/// `lsnpipe guard <token>`: the token is random and the same for the whole process.
fn application_name() -> String {
    static TOKEN: OnceLock<u64> = OnceLock::new();
    let token = TOKEN.get_or_init(|| {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        hasher.finish()
    });
    format!("lsnpipe guard {token:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_stable_and_differs_by_slot() {
        // Fixed: a different value would let two lsnpipe versions run for one slot at once.
        assert_eq!(lock_key("s"), lock_key("s"));
        assert_ne!(lock_key("s"), lock_key("t"));
        // FNV-1a of "lsnpipe run\0", worked out apart from this code.
        assert_eq!(lock_key(""), 0x4abb_0177_4534_acb9);
    }

    #[test]
    fn the_application_name_is_one_per_process_and_fits() {
        assert_eq!(application_name(), application_name());
        // NAMEDATALEN - 1: a longer name would be cut, and never match.
        assert!(application_name().len() <= 63);
        assert!(run_tag(lock_key("s")).len() <= 63);
        assert_ne!(run_tag(lock_key("s")), application_name());
    }
}
