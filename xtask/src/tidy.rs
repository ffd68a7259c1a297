//! The tidy checks: module docs, dependency direction, no switched-off tests.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Which internal crates each crate may depend on (normal dependencies; tests may use more).
/// The dependency direction that docs/ARCHITECTURE.md draws, written as data.
/// Which internal crates each crate or binary (its folder in the workspace) may depend on
/// (normal dependencies; tests may use more). Every folder under crates/ and bins/ must be
/// listed. The dependency direction that docs/ARCHITECTURE.md draws, written as data.
const ALLOWED: &[(&str, &[&str])] = &[
    ("crates/pilot-core", &[]),
    ("crates/pilot-cron", &[]),
    ("crates/pilot-telemetry", &["pilot-core"]),
    ("crates/pilot-registry", &["pilot-core"]),
    (
        "crates/pilot-provider-ai",
        &["pilot-core", "pilot-registry"],
    ),
    (
        "crates/pilot-provider-http",
        &["pilot-core", "pilot-registry"],
    ),
    (
        "crates/pilot-provider-logic",
        &["pilot-core", "pilot-registry"],
    ),
    ("crates/pilot-storage", &["pilot-core"]),
    ("crates/pilot-engine", &["pilot-core", "pilot-registry"]),
    (
        "crates/pilot-scheduler",
        &[
            "pilot-core",
            "pilot-cron",
            "pilot-telemetry",
            "pilot-registry",
            "pilot-engine",
            "pilot-storage",
        ],
    ),
    (
        "crates/pilot-api",
        &[
            "pilot-core",
            "pilot-cron",
            "pilot-telemetry",
            "pilot-registry",
            "pilot-engine",
            "pilot-storage",
            "pilot-scheduler",
        ],
    ),
    (
        "crates/pilot-boot",
        &[
            "pilot-registry",
            "pilot-provider-ai",
            "pilot-provider-http",
            "pilot-provider-logic",
            "pilot-engine",
            "pilot-storage",
            "pilot-scheduler",
        ],
    ),
    // The binaries wire libraries together; the worker serves no API, so it never links it.
    (
        "bins/pilot-server",
        &[
            "pilot-boot",
            "pilot-core",
            "pilot-telemetry",
            "pilot-registry",
            "pilot-provider-ai",
            "pilot-provider-http",
            "pilot-provider-logic",
            "pilot-engine",
            "pilot-storage",
            "pilot-scheduler",
            "pilot-api",
        ],
    ),
    (
        "bins/pilot-worker",
        &[
            "pilot-boot",
            "pilot-core",
            "pilot-telemetry",
            "pilot-registry",
            "pilot-provider-ai",
            "pilot-provider-http",
            "pilot-provider-logic",
            "pilot-engine",
            "pilot-storage",
            "pilot-scheduler",
        ],
    ),
];

/// Runs every check and fails with the list of problems.
pub(crate) fn run(root: &Path) -> Result<()> {
    let mut problems = Vec::new();
    check_dependencies(root, &mut problems)?;
    for file in rust_files(root)? {
        let text =
            fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        let shown = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .display()
            .to_string();
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let is_crate_root_with_readme = first.starts_with("#![doc = include_str!");
        if !first.starts_with("//!") && !is_crate_root_with_readme {
            problems.push(format!("{shown}: does not open with a `//!` module doc"));
        }
        for banned in ["#[ignore", "#[should_panic"] {
            if text.contains(banned) && !shown.starts_with("xtask/") {
                problems.push(format!("{shown}: contains {banned}]"));
            }
        }
        check_self_explaining(&shown, &text, &mut problems);
    }
    for doc in markdown_files(root)?.into_iter().chain(config_files(root)?) {
        let text =
            fs::read_to_string(&doc).with_context(|| format!("reading {}", doc.display()))?;
        let shown = doc.strip_prefix(root).unwrap_or(&doc).display().to_string();
        check_self_explaining(&shown, &text, &mut problems);
    }
    if problems.is_empty() {
        println!("tidy: ok");
        return Ok(());
    }
    for p in &problems {
        eprintln!("tidy: {p}");
    }
    bail!("tidy found {} problem(s)", problems.len())
}

fn check_dependencies(root: &Path, problems: &mut Vec<String>) -> Result<()> {
    for group in ["crates", "bins"] {
        let mut folders: Vec<PathBuf> = fs::read_dir(root.join(group))
            .with_context(|| format!("listing {group}/"))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.join("Cargo.toml").is_file())
            .collect();
        folders.sort();
        for folder in folders {
            let name = folder.file_name().unwrap_or_default().to_string_lossy();
            let krate = format!("{group}/{name}");
            let Some((_, allowed)) = ALLOWED.iter().find(|(k, _)| *k == krate) else {
                problems.push(format!(
                    "{krate} is not in tidy's dependency rules: add it to ALLOWED in \
                     xtask/src/tidy.rs and to the crate graph of docs/ARCHITECTURE.md"
                ));
                continue;
            };
            let manifest = folder.join("Cargo.toml");
            let text = fs::read_to_string(&manifest)
                .with_context(|| format!("reading {}", manifest.display()))?;
            for dep in normal_dependencies(&text) {
                if dep.starts_with("pilot-") && !allowed.contains(&dep.as_str()) {
                    problems.push(format!(
                        "{krate} depends on {dep}, against the dependency direction of docs/ARCHITECTURE.md"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The dependency names listed under `[dependencies]` (not dev or build dependencies).
fn normal_dependencies(manifest: &str) -> Vec<String> {
    let mut in_section = false;
    let mut names = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_section = line == "[dependencies]";
            continue;
        }
        if in_section && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['.', '=', ' ']).next().unwrap_or("");
            names.push(name.to_owned());
        }
    }
    names
}

/// The repo explains itself: no file points to planning documents that live outside it, or to
/// tracker issue numbers, which a reader of the repo does not have.
fn check_self_explaining(shown: &str, text: &str, problems: &mut Vec<String>) {
    // Spelled in pieces so this file does not match itself.
    let outside = [
        ["SPEC", ".md"],
        ["SPEC", " section"],
        ["STYLE", ".md"],
        ["NOTES", ".md"],
    ];
    for pieces in outside {
        let needle = pieces.concat();
        if text.contains(&needle) {
            problems.push(format!(
                "{shown}: refers to {needle}, which is not in this repository"
            ));
        }
    }
    let bytes = text.as_bytes();
    for prefix in ["(issue ", "issue #"] {
        let mut from = 0;
        while let Some(at) = text[from..].find(prefix) {
            let next = from + at + prefix.len();
            if bytes.get(next).is_some_and(u8::is_ascii_digit) {
                problems.push(format!("{shown}: cites a tracker issue number"));
                break;
            }
            from = next;
        }
    }
}

/// README.md, docs/*.md and each crate's README.md.
fn markdown_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = vec![root.join("README.md")];
    for entry in fs::read_dir(root.join("docs")).context("listing docs")? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "md") {
            out.push(path);
        }
    }
    out.extend(in_every_crate(root, "README.md")?);
    Ok(out)
}

/// `file` of every crate and binary that has one.
fn in_every_crate(root: &Path, file: &str) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for top in ["crates", "bins"] {
        for entry in fs::read_dir(root.join(top)).with_context(|| format!("listing {top}"))? {
            let path = entry?.path().join(file);
            if path.is_file() {
                out.push(path);
            }
        }
    }
    Ok(out)
}

/// The root's TOML files, every crate's Cargo.toml, and the CI scripts: their comments are
/// read too.
fn config_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for dir in [root.to_path_buf(), root.join(".ci")] {
        for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let path = entry?.path();
            let is_ci = dir.ends_with(".ci");
            if path.is_file() && (is_ci || path.extension().is_some_and(|e| e == "toml")) {
                out.push(path);
            }
        }
    }
    out.extend(in_every_crate(root, "Cargo.toml")?);
    out.push(root.join("xtask").join("Cargo.toml"));
    Ok(out)
}

fn rust_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for top in ["crates", "bins", "xtask"] {
        walk(&root.join(top), &mut out)?;
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            if path
                .file_name()
                .is_some_and(|n| n == "target" || n == "fuzz")
            {
                continue;
            }
            walk(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}
