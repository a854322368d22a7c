//! Random transactions for the source, generated up front from the seed (no statement reads
//! the database to decide what to write), so a seed always names the same programme.
//!
//! Statements may fail on the source (a duplicate key, a foreign key, a deadlock between
//! clients): a guarded statement runs under its own savepoint and a failure only drops it; an
//! unguarded failure aborts its transaction. The runner records what actually committed.

use super::features::Features;
use super::rng::Rng;
use super::schema::Schema;
use super::statements::Gen;

#[derive(Debug, Clone)]
pub struct Stmt {
    pub sql: String,
    /// Run under a savepoint: a failure drops this statement only.
    pub guard: bool,
}

#[derive(Debug, Clone)]
pub struct Txn {
    pub stmts: Vec<Stmt>,
    /// False: ends with ROLLBACK.
    pub commit: bool,
}

/// Something done to the servers or to lsnpipe in the middle of the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL lsnpipe, start it again.
    Kill,
    /// Restart the target (fast shutdown).
    TargetRestart,
    /// Stop the target immediately (no checkpoint), start it again.
    TargetCrash,
    /// Stop lsnpipe, drop its slot, start it again with `--create-slot`.
    SlotDrop,
    /// Start a second lsnpipe for the slot beside the first; a moment later, SIGKILL the
    /// first: the second goes on.
    Twin,
}

impl Fault {
    pub fn describe(self) -> &'static str {
        match self {
            Fault::Kill => "SIGKILL lsnpipe, then start it again",
            Fault::TargetRestart => "restart the target server (pg_ctl restart -m fast)",
            Fault::TargetCrash => {
                "stop the target immediately (pg_ctl stop -m immediate), start it"
            }
            Fault::SlotDrop => "stop lsnpipe, drop its slot, run lsnpipe --create-slot again",
            Fault::Twin => "start a second lsnpipe for the slot, then SIGKILL the first",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Item {
    Txn(Txn),
    Fault(Fault),
}

/// Settings of one run besides the schema and the statements.
#[derive(Debug, Clone)]
pub struct Settings {
    pub datestyle: bool,
    pub via_root: bool,
    pub max_batch_transactions: u32,
    pub max_batch_ms: u32,
    pub copy_jobs: u32,
    /// Kill lsnpipe this many ms after its first start (an interrupted initial copy).
    pub copy_interrupt_ms: Option<u64>,
    /// Stop lsnpipe after its initial copy and start it again after the load: it then catches
    /// up on a backlog, in large groups.
    pub backlog: bool,
}

/// Everything one run does.
#[derive(Debug, Clone)]
pub struct Plan {
    pub seed: u64,
    pub features: Features,
    pub schema: Schema,
    pub settings: Settings,
    /// Run before lsnpipe starts: reaches the target by the initial copy.
    pub initial: Vec<Txn>,
    /// One programme per concurrent client; faults are done by the client that meets them.
    pub clients: Vec<Vec<Item>>,
}

impl Plan {
    pub fn transactions(&self) -> usize {
        self.initial.len()
            + self
                .clients
                .iter()
                .flatten()
                .filter(|i| matches!(i, Item::Txn(_)))
                .count()
    }
}

/// Size of a run.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    pub txns_per_client: usize,
    pub large_rows: i64,
}

pub fn generate(seed: u64, features: Features, size: Size) -> Plan {
    let root = Rng::new(seed);
    let schema = Schema::generate(&mut root.fork(1), &features);
    let mut rng = root.fork(2);
    let small = features.has("small_groups");
    let settings = Settings {
        datestyle: features.has("datestyle"),
        via_root: features.has("via_root"),
        max_batch_transactions: if small {
            *rng.pick(&[1, 2, 5, 50])
        } else {
            10_000
        },
        max_batch_ms: if small { *rng.pick(&[1, 20, 100]) } else { 250 },
        copy_jobs: u32::try_from(rng.range(1, 3)).unwrap_or(1),
        copy_interrupt_ms: features
            .has("copy_interrupt")
            .then(|| u64::try_from(rng.range(20, 600)).unwrap_or(100)),
        backlog: features.has("backlog"),
    };
    let nclients = if features.has("concurrency") {
        rng.range(2, 4)
    } else {
        1
    };
    let mut initial = Vec::new();
    if features.has("initial_copy") {
        let mut g = Gen::new(root.fork(3), &features, &schema, 9, size);
        for _ in 0..rng.range(5, 25) {
            initial.push(g.txn(false));
        }
    }
    let mut clients = Vec::new();
    for c in 0..nclients {
        let client = usize::try_from(c).unwrap_or(0);
        let mut g = Gen::new(
            root.fork(10 + u64::try_from(c).unwrap_or(0)),
            &features,
            &schema,
            client,
            size,
        );
        let mut items: Vec<Item> = (0..size.txns_per_client)
            .map(|_| Item::Txn(g.txn(true)))
            .collect();
        if client == 0 {
            let mut faults = Vec::new();
            let pick = |f: &str, fault: Fault, n: i64, r: &mut Rng, out: &mut Vec<Fault>| {
                if features.has(f) {
                    for _ in 0..r.range(1, n) {
                        out.push(fault);
                    }
                }
            };
            pick("kill", Fault::Kill, 3, &mut rng, &mut faults);
            pick(
                "target_restart",
                Fault::TargetRestart,
                1,
                &mut rng,
                &mut faults,
            );
            pick("target_crash", Fault::TargetCrash, 1, &mut rng, &mut faults);
            pick("slot_drop", Fault::SlotDrop, 1, &mut rng, &mut faults);
            pick("twin", Fault::Twin, 2, &mut rng, &mut faults);
            for fault in faults {
                let at = usize::try_from(rng.below(u64::try_from(items.len()).unwrap_or(1)))
                    .unwrap_or(0);
                items.insert(at, Item::Fault(fault));
            }
            if features.has("twin") && features.has("initial_copy") && rng.below(2) == 0 {
                // First thing: most likely while the first copies (the slot is not held then).
                items.insert(0, Item::Fault(Fault::Twin));
            }
            if features.has("copy_faults") {
                // First thing: the initial copy is most likely still running.
                items.insert(
                    0,
                    Item::Fault(*rng.pick(&[Fault::TargetRestart, Fault::TargetCrash])),
                );
            }
        }
        clients.push(items);
    }
    Plan {
        seed,
        features,
        schema,
        settings,
        initial,
        clients,
    }
}

/// SQL a person can paste into psql: the statements of `items`, one transaction per block.
pub fn txn_sql(txn: &Txn) -> String {
    let mut out = String::from("BEGIN;\n");
    for s in &txn.stmts {
        out.push_str(&s.sql);
        out.push_str(";\n");
    }
    out.push_str(if txn.commit {
        "COMMIT;\n"
    } else {
        "ROLLBACK;\n"
    });
    out
}
