//! The demo's sample database and its steady write load.
//!
//! ```text
//!  SCHEMA (both sides, until the initial copy creates the target's) ─▶ publication
//!  SAMPLE_DATA (source) ─▶ load: `rate` transactions/s, each one of
//!    new order (+ event) │ order status change │ new customer │ delete an old event
//! ```

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_postgres::Client;

use crate::ops::OpsError;

/// Tables of the sample shop; the same text runs on the source and the target.
pub const SCHEMA: &str = "
    CREATE TABLE customers (
        id bigserial PRIMARY KEY,
        name text NOT NULL,
        email text,
        created_at timestamptz NOT NULL DEFAULT now());
    CREATE TABLE orders (
        id bigserial PRIMARY KEY,
        customer_id bigint NOT NULL,
        amount numeric(12, 2) NOT NULL,
        status text NOT NULL,
        placed_at timestamptz NOT NULL DEFAULT now());
    CREATE TABLE events (
        id bigserial PRIMARY KEY,
        order_id bigint,
        kind text NOT NULL,
        payload jsonb,
        at timestamptz NOT NULL DEFAULT now());";

pub const TABLES: &[&str] = &["customers", "orders", "events"];

pub const PUBLICATION_DDL: &str = "CREATE PUBLICATION demo_pub FOR TABLE customers, orders, events";

/// Rows the sample starts with.
pub const SAMPLE_DATA: &str = "
    INSERT INTO customers (name, email)
        SELECT 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 1000) g;
    INSERT INTO orders (customer_id, amount, status)
        SELECT 1 + g % 1000, (g % 500) + 0.99, 'placed' FROM generate_series(1, 5000) g;";

/// Write `rate` small transactions per second until `stop`; returns how many committed.
pub async fn run(
    client: Client,
    rate: u32,
    mut stop: watch::Receiver<bool>,
) -> Result<u64, OpsError> {
    let failed = OpsError::sql("source", "sample load");
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut random = XorShift::seeded();
    let mut committed = 0u64;
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return Ok(committed),
            _ = tick.tick() => {}
        }
        let n = random.next();
        let sql = match n % 10 {
            0..=4 => format!(
                "WITH o AS (INSERT INTO orders (customer_id, amount, status) \
                   VALUES ({}, {}.{:02}, 'placed') RETURNING id) \
                 INSERT INTO events (order_id, kind, payload) \
                   SELECT id, 'placed', jsonb_build_object('source', 'demo', 'n', {n}) FROM o",
                1 + n % 1000,
                n % 900,
                n % 100
            ),
            5..=7 => format!(
                "UPDATE orders SET status = (ARRAY['paid', 'shipped', 'delivered'])[1 + {} % 3] \
                 WHERE id = (SELECT max(id) - {} % 2000 FROM orders)",
                n % 7,
                n % 1999
            ),
            8 => format!("INSERT INTO customers (name, email) VALUES ('walk-in {n}', NULL)"),
            _ => "DELETE FROM events WHERE id = (SELECT min(id) FROM events)".to_owned(),
        };
        client.batch_execute(&sql).await.map_err(&failed)?;
        committed += 1;
    }
}

/// A tiny pseudo-random sequence: enough to vary the sample load, no crate needed.
struct XorShift(u64);

impl XorShift {
    fn seeded() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| u64::from(d.subsec_nanos()));
        XorShift(nanos | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x >> 1
    }
}
