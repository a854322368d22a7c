//! lsnpipe's decoder sources, compiled on their own for fuzzing (see Cargo.toml).

#[path = "../../src/lsn.rs"]
pub mod lsn;
#[path = "../../src/pgoutput/mod.rs"]
pub mod pgoutput;

pub use lsn::Lsn;
