//! Unit tests of the metric helpers, read back through a registry as a scrape would.

use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use prometheus::proto::MetricFamily;

use super::*;
use crate::clock::pg_clock_now;

fn family<'a>(families: &'a [MetricFamily], name: &str) -> &'a MetricFamily {
    families
        .iter()
        .find(|f| f.name() == name)
        .unwrap_or_else(|| panic!("{name} is not registered"))
}

fn gauge_value(registry: &Registry, name: &str) -> f64 {
    let families = registry.gather();
    family(&families, name).get_metric()[0].get_gauge().value()
}

fn labelled(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    let families = registry.gather();
    let metric = family(&families, name)
        .get_metric()
        .iter()
        .find(|m| {
            labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            })
        })
        .unwrap_or_else(|| panic!("{name} has no series {labels:?}"));
    if metric.get_counter().value() != 0.0 {
        metric.get_counter().value()
    } else {
        metric.get_gauge().value()
    }
}

#[test]
fn registers_every_named_family_once() {
    let registry = Registry::new();
    let _metrics = Metrics::register(&registry).unwrap();
    let families = registry.gather();
    for name in names::ALL {
        // Label-less counters and histograms show up even before any event.
        let present = families.iter().any(|f| f.name() == *name);
        let vec_without_series = [
            names::RECEIVED_BYTES,
            names::RECEIVED_MESSAGES,
            names::ROWS_APPLIED,
            names::SCHEMA_CHANGES,
            names::ERRORS,
        ];
        assert!(
            present || vec_without_series.contains(name),
            "{name} missing"
        );
    }
    assert!(
        Metrics::register(&registry).is_err(),
        "a second registration into the same registry must fail"
    );
}

#[test]
fn positions_set_lsns_and_byte_lag() {
    let registry = Registry::new();
    let metrics = Metrics::register(&registry).unwrap();
    metrics.set_positions(Lsn::new(0x1_0000_0100), Lsn::new(0x1_0000_0000));
    assert_eq!(gauge_value(&registry, names::RECEIVED_LSN), 4_294_967_552.0);
    assert_eq!(gauge_value(&registry, names::FLUSHED_LSN), 4_294_967_296.0);
    assert_eq!(gauge_value(&registry, names::LAG_BYTES), 256.0);
    // Flushed past the received position (an idle position recorded): no negative lag.
    metrics.set_positions(Lsn::new(10), Lsn::new(20));
    assert_eq!(gauge_value(&registry, names::LAG_BYTES), 0.0);
}

#[test]
fn lag_seconds_is_computed_at_scrape_time() {
    let registry = Registry::new();
    let metrics = Metrics::register(&registry).unwrap();
    assert_eq!(gauge_value(&registry, names::LAG_SECONDS), 0.0);
    metrics.set_oldest_unapplied_commit(Some(pg_clock_now() - 90_000_000));
    let lag = gauge_value(&registry, names::LAG_SECONDS);
    assert!((90.0..100.0).contains(&lag), "lag {lag}");
    metrics.set_oldest_unapplied_commit(None);
    assert_eq!(gauge_value(&registry, names::LAG_SECONDS), 0.0);
}

#[test]
fn batches_count_rows_by_table_and_op() {
    let registry = Registry::new();
    let metrics = Metrics::register(&registry).unwrap();
    metrics.record_applied_batch(
        3,
        [
            ("public.accounts", RowOp::Insert, 5),
            ("public.accounts", RowOp::Delete, 2),
        ],
        Duration::from_millis(20),
    );
    metrics.record_applied_batch(1, [("public.accounts", RowOp::Insert, 1)], Duration::ZERO);
    let rows = |op| {
        labelled(
            &registry,
            names::ROWS_APPLIED,
            &[("table", "public.accounts"), ("op", op)],
        )
    };
    assert_eq!(rows("insert"), 6.0);
    assert_eq!(rows("delete"), 2.0);
    assert_eq!(metrics.transactions_applied.get(), 4);
    assert_eq!(metrics.apply_batch_rows.get_sample_count(), 2);
    assert_eq!(metrics.apply_batch_rows.get_sample_sum(), 8.0);
    assert!((metrics.apply_batch_duration.get_sample_sum() - 0.02).abs() < 1e-9);
}

#[test]
fn received_reconnects_and_errors_are_labelled() {
    let registry = Registry::new();
    let metrics = Metrics::register(&registry).unwrap();
    metrics.record_received("insert", 2, 100);
    metrics.record_received("insert", 1, 50);
    metrics.reconnect(Side::Target);
    metrics.error(ErrorKind::Apply);
    assert_eq!(
        labelled(&registry, names::RECEIVED_BYTES, &[("kind", "insert")]),
        150.0
    );
    assert_eq!(
        labelled(&registry, names::RECEIVED_MESSAGES, &[("kind", "insert")]),
        3.0
    );
    assert_eq!(
        labelled(&registry, names::RECONNECTS, &[("side", "target")]),
        1.0
    );
    assert_eq!(
        labelled(&registry, names::RECONNECTS, &[("side", "source")]),
        0.0
    );
    assert_eq!(
        labelled(&registry, names::ERRORS, &[("kind", "apply")]),
        1.0
    );
    // Every other kind is there at 0 before its first error, or `increase()` would miss it.
    for kind in ErrorKind::ALL
        .into_iter()
        .filter(|k| *k != ErrorKind::Apply)
    {
        assert_eq!(
            labelled(&registry, names::ERRORS, &[("kind", kind.as_str())]),
            0.0
        );
    }
}

#[test]
fn slot_status_is_one_hot_over_a_fixed_label_set() {
    let registry = Registry::new();
    let metrics = Metrics::register(&registry).unwrap();
    let status = |s| labelled(&registry, names::SLOT_WAL_STATUS, &[("status", s)]);
    metrics.set_slot_state(Some((4096, Some("reserved"))));
    assert_eq!(
        gauge_value(&registry, names::SLOT_RETAINED_WAL_BYTES),
        4096.0
    );
    assert_eq!(status("reserved"), 1.0);
    assert_eq!(status("missing"), 0.0);
    metrics.set_slot_state(Some((1, Some("some future status"))));
    assert_eq!(status("reserved"), 0.0);
    assert_eq!(status("unknown"), 1.0);
    metrics.set_slot_state(None);
    assert_eq!(status("unknown"), 0.0);
    assert_eq!(status("missing"), 1.0);
    assert_eq!(gauge_value(&registry, names::SLOT_RETAINED_WAL_BYTES), 0.0);
    let families = registry.gather();
    assert_eq!(
        family(&families, names::SLOT_WAL_STATUS).get_metric().len(),
        SLOT_STATUSES.len()
    );
}

#[test]
fn snapshot_progress() {
    let registry = Registry::new();
    let metrics = Metrics::register(&registry).unwrap();
    metrics.set_snapshot_tables_remaining(3);
    metrics.snapshot_rows_copied(1000);
    assert_eq!(
        gauge_value(&registry, names::SNAPSHOT_TABLES_REMAINING),
        3.0
    );
    assert_eq!(metrics.snapshot_rows_copied.get(), 1000);
}

/// The counter follows the status updates the stream builds (`Positions::status_update`), as
/// the telemetry refresh reads them: the path the missing-status-update alert depends on.
#[test]
fn status_updates_are_counted_from_the_stream_positions() {
    let registry = Registry::new();
    let metrics = Metrics::register(&registry).unwrap();
    let telemetry = crate::telemetry::Telemetry::new(metrics.clone(), Arc::new(Health::new()));
    let positions = Arc::new(crate::positions::Positions::new(Lsn::ZERO));
    telemetry.watch_positions(positions.clone());
    telemetry.refresh();
    assert_eq!(metrics.status_updates_sent.get(), 0);
    positions.status_update(false);
    positions.status_update(true);
    telemetry.refresh();
    assert_eq!(metrics.status_updates_sent.get(), 2);
    // Counted once, however often the gauges are refreshed.
    telemetry.refresh();
    assert_eq!(metrics.status_updates_sent.get(), 2);
}
