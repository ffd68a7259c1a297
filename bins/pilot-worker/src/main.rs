//! pilot-worker entry point.

fn main() {}
