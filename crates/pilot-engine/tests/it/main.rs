//! pilot-engine's integration tests, in one binary (each test binary is a link, and links are
//! what a two-core machine waits for). Each module is one subject.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    reason = "tests fail on the unexpected, and print the numbers they measure"
)]

mod support;

mod execution;
mod logic_chain;
mod redaction;
mod webhook_plan;
