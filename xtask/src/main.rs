//! cargo xtask: project automation that would otherwise be shell scripts.
//!
//! - `cargo xtask tidy`: the architecture checks that neither rustc nor clippy make: every
//!   source file opens with a `//!` doc, crates depend only in the direction docs/ARCHITECTURE.md draws
//!   allows, and no test is switched off with `#[ignore]` or `#[should_panic]`.
//! - `cargo xtask ci`: what `.ci/run` does, minus starting PostgreSQL.
//! - `cargo xtask codegen [--check]`: writes the generated files that are committed
//!   (docs/openapi.json, the document the server serves), or with `--check` fails when one is
//!   not what the code generates.
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
        Some("codegen") => codegen(&root, args.get(1).is_some_and(|a| a == "--check")),
        _ => bail!("usage: cargo xtask <tidy|ci|bench|codegen [--check]>"),
    }
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// docs/openapi.json is written (or, checking, compared) by pilot-api's own test of it, so the
/// document comes from the code that serves it and xtask needs none of the server's crates.
fn codegen(root: &Path, check: bool) -> Result<()> {
    let test = "openapi::tests::the_committed_document_is_the_generated_one";
    let status = Command::new("cargo")
        .args([
            "test",
            "--quiet",
            "-p",
            "pilot-api",
            "--lib",
            "--",
            "--exact",
            test,
        ])
        .env("PILOT_WRITE_OPENAPI", if check { "0" } else { "1" })
        .current_dir(root)
        .status()
        .context("running pilot-api's document test")?;
    if !status.success() {
        bail!(
            "docs/openapi.json is out of date{}",
            if check {
                ": run `cargo xtask codegen` and commit it"
            } else {
                ""
            }
        );
    }
    if !check {
        println!("codegen: wrote docs/openapi.json");
    }
    Ok(())
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
