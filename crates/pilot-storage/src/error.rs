//! The one error type of pilot-storage. Callers match on its variants (the API answers 503 for
//! [`StorageError::Unavailable`], 404 for [`StorageError::NotFound`], 409 for
//! [`StorageError::Conflict`]); at the pilot-core trait boundary it becomes a
//! [`pilot_core::StoreError`]. No variant ever carries a secret: messages come from the
//! database driver (which never echoes bound values) or from this crate.

use pilot_core::StoreError;

/// A storage operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The database could not be reached: connecting failed, the pool timed out, or the
    /// connection broke. The API answers 503.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The object does not exist, or belongs to another user (which looks the same).
    #[error("not found")]
    NotFound,
    /// The write conflicts with existing data (a unique constraint), e.g. a taken name.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A run write carried a lease epoch that is no longer the run's; nothing was changed.
    #[error("stale lease: the run is owned by a newer lease epoch")]
    StaleEpoch,
    /// A pagination cursor is not one this crate produced.
    #[error("invalid pagination cursor")]
    InvalidCursor,
    /// An argument is out of range or malformed (the message says which).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The database configuration is unusable (unknown URL scheme, bad pool size...).
    #[error("invalid database configuration: {0}")]
    Config(String),
    /// Running or reverting migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// The master-key configuration is unusable (bad base64, wrong length, unknown active id).
    #[error("invalid master key configuration: {0}")]
    KeyConfig(String),
    /// A credential needs a key id the keyring does not hold.
    #[error("credential encrypted with unknown key id '{0}'")]
    UnknownKeyId(String),
    /// A credential failed authentication: tampered, moved to another user or provider, or
    /// encrypted under a different key with the same id.
    #[error("credential could not be decrypted: {0}")]
    Decrypt(String),
    /// Credential operations need a keyring, and none was given to the database handle.
    #[error("no master key configured for credential encryption")]
    NoKeyring,
    /// A stored value could not be decoded (bad JSON, unknown enum name).
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// Reading or writing the key file failed.
    #[error("key file: {0}")]
    Io(#[from] std::io::Error),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(String),
}

impl StorageError {
    /// Whether this error means the database is unreachable (the API answers 503).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<diesel::result::Error> for StorageError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind as K, Error as E};
        match e {
            E::NotFound => Self::NotFound,
            E::DatabaseError(K::UniqueViolation, info) => Self::Conflict(info.message().to_owned()),
            E::DatabaseError(K::ClosedConnection, info) => {
                Self::Unavailable(info.message().to_owned())
            }
            E::DatabaseError(K::SerializationFailure, info) => {
                Self::Conflict(info.message().to_owned())
            }
            E::BrokenTransactionManager => Self::Unavailable("broken transaction".to_owned()),
            other => {
                let message = other.to_string();
                if looks_unavailable(&message) {
                    Self::Unavailable(message)
                } else {
                    Self::Database(message)
                }
            }
        }
    }
}

impl From<diesel::ConnectionError> for StorageError {
    fn from(e: diesel::ConnectionError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl From<r2d2::Error> for StorageError {
    fn from(e: r2d2::Error) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl From<serde_json::Error> for StorageError {
    fn from(e: serde_json::Error) -> Self {
        Self::Corrupt(e.to_string())
    }
}

impl From<StorageError> for StoreError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::StaleEpoch => StoreError::StaleEpoch,
            StorageError::NotFound => StoreError::NotFound,
            StorageError::Conflict(m) => StoreError::Conflict(m),
            // A write the store refuses as malformed (e.g. a step index the run does not have)
            // conflicts with the run's stored shape, as in pilot-core's MemoryStore.
            StorageError::InvalidInput(m) => StoreError::Conflict(m),
            StorageError::Unavailable(m) => StoreError::Unavailable(m),
            e @ (StorageError::UnknownKeyId(_)
            | StorageError::Decrypt(_)
            | StorageError::NoKeyring
            | StorageError::Corrupt(_)) => StoreError::Corrupt(e.to_string()),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

/// libpq reports a lost server as a plain error whose text is the only clue.
fn looks_unavailable(message: &str) -> bool {
    const MARKERS: [&str; 5] = [
        "server closed the connection",
        "connection refused",
        "could not connect",
        "terminating connection",
        "no connection to the server",
    ];
    let lower = message.to_ascii_lowercase();
    MARKERS.iter().any(|m| lower.contains(m))
}
