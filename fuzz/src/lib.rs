//! lsnpipe's decoder sources, compiled on their own for fuzzing (see Cargo.toml).

#[path = "../../src/lsn.rs"]
pub mod lsn;
#[path = "../../src/pgoutput/mod.rs"]
pub mod pgoutput;
/// The streaming-replication frames around each pgoutput message (`lsnpipe::wire`'s, sans-IO).
#[path = "../../src/wire/frames.rs"]
pub mod frames;

pub use lsn::Lsn;
