//! The freshness probe of `scripts/bench-freshness.sh`: one client that inserts a row on the
//! source and times how long until the target shows it, the same code and clock for every
//! replicator.
//!
//! ```text
//! cargo run --release --example freshness_probe -- SOURCE TARGET TABLE SECONDS [PHASE]
//! ```
//!
//! Every 100 ms: insert `(id, phase)` into `TABLE` on the source in autocommit (the id is chosen
//! here, so the poll needs nothing back from the insert), then ask the target every 1 ms whether
//! the row is there. The figure is the wall time from issuing the insert to the answer that
//! shows the row. Prints one line, `probes N p50 X p99 Y max Z` (milliseconds), on stdout, and
//! every latency on stderr when `PROBE_ALL=1`.
//!
//! `TABLE` needs `id bigint PRIMARY KEY, phase int` (other columns must have defaults).

use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

type Error = Box<dyn std::error::Error>;

/// Between two probe inserts.
const PERIOD: Duration = Duration::from_millis(100);
/// Between two polls of the target.
const POLL: Duration = Duration::from_millis(1);
/// A probe not seen after this long fails the run (the replicator is stuck).
const GIVE_UP: Duration = Duration::from_secs(60);

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [source, target, table, seconds, rest @ ..] = args.as_slice() else {
        return Err("usage: freshness_probe SOURCE TARGET TABLE SECONDS [PHASE]".into());
    };
    let seconds: u64 = seconds.parse()?;
    let phase: i32 = rest.first().map(|p| p.parse()).transpose()?.unwrap_or(0);
    let source = connect(source).await?;
    let target = connect(target).await?;
    // Ids continue from what is there, so phases can share one table.
    let start: i64 = source
        .query_one(&format!("SELECT coalesce(max(id), 0) FROM {table}"), &[])
        .await?
        .get(0);
    let insert = source
        .prepare(&format!("INSERT INTO {table} (id, phase) VALUES ($1, $2)"))
        .await?;
    let seen = target
        .prepare(&format!("SELECT 1 FROM {table} WHERE id = $1"))
        .await?;

    let mut latencies = Vec::new();
    let mut ticker = tokio::time::interval(PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut id = start;
    while Instant::now() < until {
        ticker.tick().await;
        id += 1;
        let issued = Instant::now();
        source.execute(&insert, &[&id, &phase]).await?;
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            poll.tick().await;
            if !target.query(&seen, &[&id]).await?.is_empty() {
                break;
            }
            if issued.elapsed() > GIVE_UP {
                return Err(format!("probe {id} not on the target after {GIVE_UP:?}").into());
            }
        }
        let ms = issued.elapsed().as_secs_f64() * 1e3;
        if std::env::var_os("PROBE_ALL").is_some() {
            eprintln!("{ms:.3}");
        }
        latencies.push(ms);
    }
    latencies.sort_by(f64::total_cmp);
    // Nearest rank, the quantile in thousandths.
    let at = |permille: usize| -> f64 {
        let rank = (permille * latencies.len()).div_ceil(1000).max(1);
        latencies.get(rank - 1).copied().unwrap_or(f64::NAN)
    };
    #[allow(clippy::print_stdout)]
    {
        println!(
            "probes {} p50 {:.1} p99 {:.1} max {:.1}",
            latencies.len(),
            at(500),
            at(990),
            at(1000)
        );
    }
    Ok(())
}

async fn connect(conninfo: &str) -> Result<tokio_postgres::Client, Error> {
    let (client, connection) = tokio_postgres::connect(conninfo, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("connection ended: {e}");
        }
    });
    Ok(client)
}
