//! The persistence traits the engine uses. They are small on purpose: pilot-storage implements
//! them over diesel, [`crate::MemoryStore`] implements them for tests.

use async_trait::async_trait;

use crate::{Credential, Integration, RunWrite, StoreError, UserId, WriteAck};

/// Where an executing run's progress goes.
#[async_trait]
pub trait RunStore: Send + Sync {
    /// Applies `write` atomically if `write.epoch` is still the run's lease epoch; otherwise
    /// changes nothing and returns [`StoreError::StaleEpoch`].
    async fn write(&self, write: RunWrite) -> Result<WriteAck, StoreError>;
}

/// Where the engine finds the calling user's decrypted credentials and custom integrations.
#[async_trait]
pub trait CredentialStore: Send + Sync {
    /// The user's credentials stored for `provider`, decrypted. Empty when none.
    async fn credentials(
        &self,
        user: &UserId,
        provider: &str,
    ) -> Result<Vec<Credential>, StoreError>;

    /// The user's custom integration called `name`, if any.
    async fn integration(
        &self,
        user: &UserId,
        name: &str,
    ) -> Result<Option<Integration>, StoreError>;
}
