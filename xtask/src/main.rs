//! cargo xtask: project automation that would otherwise be shell scripts.
//!
//! - `cargo xtask tidy`: the architecture checks that neither rustc nor clippy make: every
//!   source file opens with a `//!` doc, crates depend only in the direction docs/ARCHITECTURE.md draws
//!   allows, and no test is switched off with `#[ignore]` or `#[should_panic]`.
//! - `cargo xtask ci`: what `.ci/run` does, minus starting PostgreSQL.
//! - `cargo xtask bench [--quick]`: measures Pilot against this machine's limits (see
//!   `bench/mod.rs` and docs/BENCHMARKS.md).

// A command-line tool: printing is its job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

mod bench;
mod tidy;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = project_root();
    match args.first().map(String::as_str) {
        Some("tidy") => tidy::run(&root),
        Some("ci") => ci(&root),
        Some("bench") => bench::run(&root, &args[1..]),
        _ => bail!("usage: cargo xtask <tidy|ci|bench>"),
    }
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn ci(root: &Path) -> Result<()> {
    tidy::run(root)?;
    let steps: [&[&str]; 3] = [
        &["fmt", "--all", "--", "--check"],
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &["test", "--workspace"],
    ];
    for args in steps {
        let status = Command::new("cargo")
            .args(args)
            .current_dir(root)
            .status()
            .with_context(|| format!("running cargo {}", args.join(" ")))?;
        if !status.success() {
            bail!("cargo {} failed", args.join(" "));
        }
    }
    Ok(())
}
