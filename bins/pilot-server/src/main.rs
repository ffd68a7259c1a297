//! pilot-server entry point.

fn main() {}
