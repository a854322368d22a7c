//! Random faults on every link and server for `LSNPIPE_FAULT_LOOP_SECS` seconds.

use std::time::{Duration, Instant};

use super::proxy::{Fault, Proxy};
use super::*;
use crate::support;
use crate::torture::rng::Rng;

/// Random faults on every link and server for `LSNPIPE_FAULT_LOOP_SECS` seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: set LSNPIPE_FAULT_LOOP_SECS and run with --ignored"]
async fn random_fault_loop() {
    let secs: u64 = support::env("LSNPIPE_FAULT_LOOP_SECS", 120);
    let seed: u64 = support::env("LSNPIPE_FAULT_SEED", support::clock_seed());
    eprintln!("fault loop: {secs} s, LSNPIPE_FAULT_SEED={seed}");
    let mut rng = Rng::new(seed);
    let source = support::private_cluster("faults_loop_src", &[]);
    let target = support::private_cluster("faults_loop_dst", &[]);
    let db = "postgres";
    let slot = "faults_loop_slot";
    support::pgbench_pair(&source, &target, db, slot).await;
    let source_link = Proxy::start(source.port).await;
    let target_link = Proxy::start(target.port).await;
    let (run_source, run_target) = (via(&source, &source_link), via(&target, &target_link));
    let start = || support::run_between(&run_source, &run_target, db, slot, &TIMEOUTS);
    let mut lsnpipe = start();
    let load = Load::start(&source, db);
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        let link = if rng.below(2) == 0 {
            &source_link
        } else {
            &target_link
        };
        let hold = Duration::from_millis(500 + rng.below(12_000));
        let which = if std::ptr::eq(link, &source_link) {
            "source"
        } else {
            "target"
        };
        let fault = rng.below(7);
        eprintln!(
            "fault loop: {} for {hold:?}",
            match fault {
                0 => format!("reset the {which} link"),
                1 => format!("silence the {which} link"),
                2 => format!("delay the {which} link"),
                3 => format!("throttle the {which} link"),
                4 => "crash the source".to_owned(),
                5 => "crash the target".to_owned(),
                _ => "SIGKILL lsnpipe".to_owned(),
            }
        );
        match fault {
            0 => link.reset(),
            1 => link.set(Fault::Blackhole),
            2 => link.set(Fault::Delay(Duration::from_millis(rng.below(300)))),
            3 => link.set(Fault::Throttle(8 * 1024 + rng.below(256 * 1024))),
            4 => {
                source.with(|c| c.crash()).unwrap();
                source.with(|c| c.start_again()).unwrap();
            }
            5 => {
                target.with(|c| c.crash()).unwrap();
                target.with(|c| c.start_again()).unwrap();
            }
            _ => {
                lsnpipe.kill9();
                lsnpipe = start();
            }
        }
        // A random hold: not a synchronisation, the point of the loop.
        tokio::time::sleep(hold).await;
        link.heal();
        still_running(&mut lsnpipe);
    }
    load.stop();
    source_link.heal();
    target_link.heal();
    support::pgbench_converge(&source, &target, db).await;
    still_running(&mut lsnpipe);
    lsnpipe.stop().await;
}
