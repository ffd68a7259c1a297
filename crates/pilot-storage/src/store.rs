//! pilot-core's persistence traits over [`Database`]: run writes go through the group-commit
//! writer; credential lookups decrypt under the owner's scope.

use async_trait::async_trait;
use pilot_core::{
    Credential, CredentialStore, Integration, RunStore, RunWrite, StoreError, UserId, WriteAck,
};

use crate::Database;
use crate::conn::{Mode, Scope, transaction};
use crate::credentials::load_credentials;
use crate::integrations::integration_named;

#[async_trait]
impl RunStore for Database {
    async fn write(&self, write: RunWrite) -> Result<WriteAck, StoreError> {
        self.inner
            .writer
            .submit(write)
            .await
            .map_err(StoreError::from)
    }
}

#[async_trait]
impl CredentialStore for Database {
    async fn credentials(
        &self,
        user: &UserId,
        provider: &str,
    ) -> Result<Vec<Credential>, StoreError> {
        let keyring = self.require_keyring()?;
        let (user, provider) = (user.clone(), provider.to_owned());
        let found = self
            .run(move |conn| {
                transaction(conn, Scope::User(&user), Mode::Read, |conn| {
                    load_credentials(conn, &user, &provider)?
                        .iter()
                        .map(|r| r.decrypt(&keyring))
                        .collect()
                })
            })
            .await?;
        Ok(found)
    }

    async fn integration(
        &self,
        user: &UserId,
        name: &str,
    ) -> Result<Option<Integration>, StoreError> {
        let (user, name) = (user.clone(), name.to_owned());
        let found = self
            .run(move |conn| {
                transaction(conn, Scope::User(&user), Mode::Read, |conn| {
                    integration_named(conn, &user, &name)
                })
            })
            .await?;
        Ok(found.map(|row| row.integration))
    }
}
