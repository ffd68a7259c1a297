//! File permissions of the embedded deployment, set before anything else touches the disk.
//!
//! The data directory holds the SQLite database (credentials, encrypted, and everything else),
//! the generated master key and the first admin token, so on first start it is created with
//! mode 0700 and the SQLite file with mode 0600 (SQLite gives its `-wal` and `-shm` files the
//! database file's mode). An empty file is a valid empty SQLite database, so creating it here
//! changes nothing else. Paths that already exist are never changed (an operator may have chosen
//! their modes); a warning says when they are readable by others.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use pilot_boot::DatabaseArgs;

/// Creates the data directory (0700) and the SQLite database file (0600) when they do not
/// exist yet, and warns about existing ones that group or others can read.
pub(crate) fn prepare(config: &DatabaseArgs) -> anyhow::Result<()> {
    ensure_private_dir(&config.data_dir)?;
    if let Some(path) = sqlite_file(config) {
        ensure_private_file(&path)?;
    }
    Ok(())
}

/// The SQLite database file the configuration names, if it names one: the flag's URL, or the
/// default `pilot.db` in the data directory. A URL read from a file is left to the opener.
fn sqlite_file(config: &DatabaseArgs) -> Option<PathBuf> {
    if config.database_url_file.is_some() {
        return None;
    }
    let Some(url) = &config.database_url else {
        return Some(config.data_dir.join("pilot.db"));
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return None;
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    // In-memory databases and URI forms are not files this code should create.
    if path.is_empty() || path.starts_with(':') || path.starts_with("file:") || path.contains('?') {
        return None;
    }
    Some(PathBuf::from(path))
}

fn ensure_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        warn_if_shared(dir);
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))
}

fn ensure_private_file(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        warn_if_shared(path);
        return Ok(());
    }
    // The file's directory is the data directory or one the operator named: it must exist.
    if path
        .parent()
        .is_some_and(|p| !p.as_os_str().is_empty() && !p.exists())
    {
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        // Another process sharing the data directory created it first.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

#[cfg(unix)]
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "group or others can access this path; Pilot creates it 0700 (directories) or 0600 (files)"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_: &Path) {}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use clap::Parser as _;

    use super::*;
    use crate::cli::Cli;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn config(args: &[&str]) -> DatabaseArgs {
        let mut all = vec!["pilot-server"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap().config.database
    }

    #[test]
    fn first_start_creates_a_private_dir_and_database_file() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("nested").join("pilot-data");
        let config = config(&["--data-dir", dir.to_str().unwrap()]);
        prepare(&config).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("pilot.db")), 0o600);
        // A second start changes nothing and does not fail.
        prepare(&config).unwrap();
        assert_eq!(mode(&dir.join("pilot.db")), 0o600);
    }

    #[test]
    fn existing_paths_keep_their_modes() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
        let db = temp.path().join("other.db");
        std::fs::write(&db, b"").unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o640)).unwrap();
        let url = format!("sqlite://{}", db.display());
        prepare(&config(&[
            "--data-dir",
            dir.to_str().unwrap(),
            "--database-url",
            &url,
        ]))
        .unwrap();
        assert_eq!(mode(&dir), 0o750);
        assert_eq!(mode(&db), 0o640);
    }

    #[test]
    fn which_file_a_configuration_names() {
        let check = |args: &[&str], expect: Option<&str>| {
            let found = sqlite_file(&config(args));
            assert_eq!(found.as_deref(), expect.map(Path::new), "{args:?}");
        };
        check(&["--data-dir", "d"], Some("d/pilot.db"));
        check(&["--database-url", "sqlite:///x/p.db"], Some("/x/p.db"));
        check(&["--database-url", "sqlite:p.db"], Some("p.db"));
        check(&["--database-url", "/x/p.db"], Some("/x/p.db"));
        check(&["--database-url", "postgres://u:p@h/db"], None);
        check(&["--database-url", "sqlite::memory:"], None);
        check(&["--database-url", "sqlite://file:x?mode=memory"], None);
    }
}
