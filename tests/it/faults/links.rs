//! Each link reset, silenced, delayed and throttled under load.

use std::time::{Duration, Instant};

use super::proxy::{Fault, Proxy};
use super::*;
use crate::support;

/// Which link a scenario breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Source,
    Target,
}

/// Reset, silence, delay and throttle one link under load; lsnpipe never exits and the target
/// ends equal to the source.
async fn link_faults(link: Link) {
    let db = support::test_dbs(match link {
        Link::Source => "faults_src_link",
        Link::Target => "faults_dst_link",
    })
    .await;
    let slot = support::unique_name("faults_link");
    let (source, target) = (support::source(), support::target());
    support::pgbench_pair(source, target, &db, &slot).await;
    let proxy = Proxy::start(match link {
        Link::Source => source.port,
        Link::Target => target.port,
    })
    .await;
    let (run_source, run_target) = match link {
        Link::Source => (via(source, &proxy), target.clone()),
        Link::Target => (source.clone(), via(target, &proxy)),
    };
    // The sessions a silenced link leaves in the server (the walsender holding the slot; the
    // lock that keeps one lsnpipe per slot, an open transaction) are ended by the next session
    // rather than waited for.
    proxy.keep_ghosts();
    let mut lsnpipe = support::run_between(&run_source, &run_target, &db, &slot, &TIMEOUTS);
    let load = Load::start(source, &db);
    let t = support::connect(target, &db).await;
    flowing(&t).await;

    // Reset: every connection on the link gets an RST.
    let sessions = sessions_started(&lsnpipe.log());
    let at = Instant::now();
    proxy.reset();
    let took = streaming_again(&lsnpipe, &t, sessions, at, WAIT).await;
    eprintln!("{link:?} link reset: streaming again after {took:?}");
    assert!(took < RECOVERY, "{link:?} reset: recovery took {took:?}");

    // Silence: sockets stay open, nothing is forwarded.
    let interrupted = interruptions(&lsnpipe.log());
    let at = Instant::now();
    proxy.set(Fault::Blackhole);
    support::wait_until("the silent link to be noticed", WAIT, || async {
        interruptions(&lsnpipe.log()) > interrupted
    })
    .await;
    let noticed = at.elapsed();
    eprintln!("{link:?} link silent: noticed after {noticed:?}");
    assert!(
        noticed <= NOTICED,
        "{link:?} silence noticed after {noticed:?}"
    );
    let sessions = sessions_started(&lsnpipe.log());
    let at = Instant::now();
    proxy.heal();
    let took = streaming_again(&lsnpipe, &t, sessions, at, WAIT).await;
    eprintln!("{link:?} link healed: streaming again after {took:?}");
    assert!(
        took < RECOVERY_AFTER_SILENCE,
        "{link:?} silence: recovery took {took:?}"
    );
    let log = lsnpipe.log();
    match link {
        // The walsender would hold the slot until wal_sender_timeout (a minute here).
        Link::Source => assert!(
            log.contains("previous walsender still holds the slot"),
            "{log}"
        ),
        // The lock session would hold the lock, and the applier's open transaction the
        // progress row, until the server noticed the link gone (never, behind this proxy).
        Link::Target => {
            assert!(log.contains("an earlier session of this lsnpipe"), "{log}");
            assert!(
                log.contains("an earlier run for this slot left behind"),
                "{log}"
            );
        }
    }

    // A slow link is not a dead one: delayed and throttled, rows still arrive, nothing resets.
    let interrupted = interruptions(&lsnpipe.log());
    for fault in [
        Fault::Delay(Duration::from_millis(100)),
        Fault::Throttle(64 * 1024),
    ] {
        proxy.set(fault);
        flowing(&t).await;
    }
    proxy.heal();
    assert_eq!(
        interruptions(&lsnpipe.log()),
        interrupted,
        "a slow {link:?} link ended a session:\n{}",
        lsnpipe.log()
    );

    load.stop();
    support::pgbench_converge(source, target, &db).await;
    still_running(&mut lsnpipe);
    lsnpipe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_link_reset_silence_delay_and_throttle() {
    link_faults(Link::Source).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_link_reset_silence_delay_and_throttle() {
    link_faults(Link::Target).await;
}
