//! The failover findings and the column comparison, decided from facts without servers.

use std::collections::BTreeMap;

use super::failover::{FailoverFacts, failover_findings};
use super::target::check_columns;
use super::*;

#[test]
fn failover_setups_that_lose_or_stall_the_slot_are_warned_about() {
    let facts = |failover, synchronized: &str, physical: &[&str]| FailoverFacts {
        slot_failover: failover,
        synchronized: synchronized.into(),
        physical_slots: physical.iter().map(|s| (*s).to_owned()).collect(),
    };
    let findings = |f: &FailoverFacts| {
        let mut report = Report::default();
        failover_findings("s", f, &mut report);
        report.findings
    };
    // No standby, no failover slot: nothing to say.
    assert!(findings(&facts(Some(false), "", &[])).is_empty());
    assert!(findings(&facts(None, "", &["sb"])).is_empty());
    let lost = findings(&facts(Some(false), "", &["sb"]));
    assert_eq!(lost[0].severity, Severity::Warn);
    assert!(lost[0].finding.contains("not a failover slot"), "{lost:?}");
    assert!(
        lost[0]
            .fix
            .contains("ALTER_REPLICATION_SLOT s (FAILOVER true)")
    );
    let unsynced = findings(&facts(Some(true), "", &["sb"]));
    assert_eq!(unsynced[0].severity, Severity::Warn);
    assert!(
        unsynced[0]
            .fix
            .contains("synchronized_standby_slots = 'sb'")
    );
    let stalls = findings(&facts(Some(true), "sb, gone", &["sb"]));
    assert_eq!(stalls[0].severity, Severity::Warn);
    assert!(stalls[0].finding.contains("gone"), "{stalls:?}");
    let fine = findings(&facts(Some(true), "sb", &["sb"]));
    assert_eq!(fine[0].severity, Severity::Ok, "{fine:?}");
}

#[test]
fn columns_missing_or_required_on_the_target_fail() {
    let source = vec![
        ("id".to_owned(), "integer".to_owned()),
        ("v".to_owned(), "text".to_owned()),
    ];
    let mut target = BTreeMap::new();
    target.insert("id".to_owned(), ("bigint".to_owned(), false));
    let mut report = Report::default();
    check_columns("t", &source, &target, &mut report);
    assert_eq!(report.findings[0].severity, Severity::Fail);
    assert!(report.findings[0].finding.contains("v missing"));

    target.insert("v".to_owned(), ("text".to_owned(), false));
    let mut report = Report::default();
    check_columns("t", &source, &target, &mut report);
    assert_eq!(report.findings[0].severity, Severity::Warn, "{report:?}");

    target.insert("extra".to_owned(), ("text".to_owned(), true));
    let mut report = Report::default();
    check_columns("t", &source, &target, &mut report);
    assert!(report.blocks_replication());
}
