//! Integration tests: one binary, one shared pair of real PostgreSQL clusters.

mod support;

mod apply;
mod harness;
