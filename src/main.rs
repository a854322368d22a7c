//! The `lsnpipe` command line: parses arguments and runs the chosen command.

use clap::Parser;

/// Change-data-capture from a PostgreSQL logical replication slot into a replica PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "lsnpipe", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
