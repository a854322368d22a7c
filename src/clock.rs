//! PostgreSQL's wire clock: microseconds since 2000-01-01 00:00:00 UTC, the scale of the
//! timestamps in XLogData, keepalives, status updates and Begin/Commit messages.
//!
//! Used for the clock field of each standby status update (`positions.rs`) and for lag in
//! seconds against a source commit time (`metrics/lag.rs`, `latency.rs`).

/// Microseconds from the Unix epoch to PostgreSQL's epoch (2000-01-01 00:00:00 UTC).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// The current time as PostgreSQL's wire clock (microseconds since 2000-01-01 UTC).
pub fn pg_clock_now() -> i64 {
    let unix_micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    unix_micros - PG_EPOCH_OFFSET_MICROS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_after_2026_in_pg_epoch() {
        // 2026-01-01 is 26 years after the PostgreSQL epoch.
        assert!(pg_clock_now() > 26 * 365 * 86_400 * 1_000_000);
    }
}
