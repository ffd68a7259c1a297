//! Online backups of the embedded SQLite database: `VACUUM INTO` writes a consistent copy of
//! the whole database (one read transaction, so writers keep going and the copy is what one
//! instant saw) into a new file, compacted. PostgreSQL deployments back up with `pg_dump`
//! instead (docs/OPERATIONS.md), so this refuses them with that advice.

use std::path::Path;

use diesel::RunQueryDsl;

use crate::conn::DbConn;
use crate::{Backend, Database, StorageError};

impl Database {
    /// Writes a consistent copy of the SQLite database to `target`, which must not exist; the
    /// file is made readable by its owner only (it holds encrypted credentials and every run).
    /// Answers the copy's size in bytes. On PostgreSQL: [`StorageError::InvalidInput`] naming
    /// `pg_dump`.
    pub async fn backup_to(&self, target: &Path) -> Result<u64, StorageError> {
        if self.backend() != Backend::Sqlite {
            return Err(StorageError::InvalidInput(
                "backups of a PostgreSQL database are taken with pg_dump (see docs/OPERATIONS.md)"
                    .to_owned(),
            ));
        }
        if target.exists() {
            return Err(StorageError::InvalidInput(format!(
                "{} exists already; give a new file",
                target.display()
            )));
        }
        let text = target
            .to_str()
            .ok_or_else(|| StorageError::InvalidInput("the backup path is not UTF-8".to_owned()))?
            .to_owned();
        self.run(move |conn| {
            let DbConn::Sqlite(c) = conn else {
                return Err(StorageError::InvalidInput("not SQLite".to_owned()));
            };
            diesel::sql_query("VACUUM INTO ?")
                .bind::<diesel::sql_types::Text, _>(&text)
                .execute(c)?;
            Ok(())
        })
        .await?;
        restrict(target)?;
        Ok(std::fs::metadata(target)?.len())
    }
}

#[cfg(unix)]
fn restrict(path: &Path) -> Result<(), StorageError> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

#[cfg(not(unix))]
fn restrict(_: &Path) -> Result<(), StorageError> {
    Ok(())
}
