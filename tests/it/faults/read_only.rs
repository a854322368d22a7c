//! A target that cannot take writes: the slot stays, lsnpipe retries and resumes.

use std::time::Instant;

use super::*;
use crate::support;

/// A read-only target: lsnpipe reports it, keeps the slot where it is, retries, and resumes with
/// nothing lost once the target takes writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_target_keeps_the_slot_and_resumes() {
    let (db, slot) = support::pgbench_db("faults_read_only").await;
    let (source, target) = (support::source(), support::target());
    let addr = support::free_addr();
    let listen = addr.to_string();
    let mut args = TIMEOUTS.to_vec();
    args.extend(["--metrics-listen", &listen]);
    let mut lsnpipe = support::run_between(source, target, &db, &slot, &args);
    let load = Load::start(source, &db);
    let t = support::connect(target, &db).await;
    flowing(&t).await;

    set_read_only(target, &db, true).await;
    drop(t);
    support::wait_until("the read-only target to be reported", WAIT, || async {
        lsnpipe.log().contains("25006")
    })
    .await;
    let s = support::connect(source, &db).await;
    let confirmed = support::slot_confirmed(&s, &slot).await;
    let retries = interruptions(&lsnpipe.log());
    support::wait_until("two more retries", WAIT, || async {
        interruptions(&lsnpipe.log()) >= retries + 2
    })
    .await;
    still_running(&mut lsnpipe);
    assert_eq!(
        support::slot_confirmed(&s, &slot).await,
        confirmed,
        "the slot moved while the target could not take writes"
    );
    let ready = crate::metrics::request(addr, "GET", "/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(ready.body.contains("read-only"), "{}", ready.body);
    let scrape = crate::metrics::request(addr, "GET", "/metrics").await.body;
    assert!(
        scrape.contains("lsnpipe_errors_total{kind=\"target_unwritable\"}"),
        "{scrape}"
    );

    let sessions = sessions_started(&lsnpipe.log());
    set_read_only(target, &db, false).await;
    let at = Instant::now();
    // Our own session was ended with lsnpipe's.
    let t = support::connect(target, &db).await;
    let took = streaming_again(&lsnpipe, &t, sessions, at, WAIT).await;
    eprintln!("read-only target: streaming again {took:?} after it took writes again");
    assert!(took < RECOVERY, "read-only target: recovery took {took:?}");

    load.stop();
    support::pgbench_converge(source, target, &db).await;
    lsnpipe.stop().await;
}
