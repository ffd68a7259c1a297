//! Provider credentials, encrypted at rest (see [`crate::Keyring`]). Storing one replaces the
//! user's previous credential for the same provider and binding (integration or origin); reading
//! metadata returns [`CredentialInfo`], a type that cannot hold the secret; only the engine's
//! [`pilot_core::CredentialStore`] lookup decrypts. Key rotation re-encrypts, in small
//! transactions, every value whose key id is not the active one, so an interrupted rotation
//! simply resumes where it stopped.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use pilot_core::{Credential, CredentialKind, Secret, UserId};

use crate::conn::{DbConn, Mode, Scope, transaction};
use crate::crypto::{Binding, Keyring};
use crate::schema::{provider_credentials as creds, users};
use crate::time::{now, to_naive, to_utc};
use crate::{Database, StorageError};

/// A credential to store.
#[derive(Debug, Clone)]
pub struct NewCredential {
    /// The provider it is for (`openai`, `custom_api`, ...).
    pub provider: String,
    /// How it is presented.
    pub kind: CredentialKind,
    /// The secret (encrypted before it leaves this process).
    pub secret: Secret,
    /// custom_api: the one origin it may be sent to.
    pub origin: Option<String>,
    /// custom_api: the integration it belongs to.
    pub integration: Option<String>,
    /// The header carrying it (`api_key`/`header` kinds on custom APIs).
    pub header_name: Option<String>,
    /// When it stops being valid, if known.
    pub expires_at: Option<DateTime<Utc>>,
}

/// What may be said about a stored credential: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialInfo {
    /// The row's id.
    pub id: String,
    /// The provider.
    pub provider: String,
    /// How it is presented.
    pub kind: CredentialKind,
    /// Its origin binding, if any.
    pub origin: Option<String>,
    /// Its integration binding, if any.
    pub integration: Option<String>,
    /// The header carrying it, if any.
    pub header_name: Option<String>,
    /// The master key id it is encrypted under.
    pub key_id: String,
    /// When it stops being valid, if known.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was first stored.
    pub created_at: DateTime<Utc>,
    /// When it was last replaced.
    pub updated_at: DateTime<Utc>,
}

/// Progress of a key rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RotationReport {
    /// Values re-encrypted under the active key by this call.
    pub rotated: u64,
    /// Values still under another key (non-zero only if the call stopped early).
    pub remaining: u64,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = creds)]
pub(crate) struct CredentialRecord {
    pub(crate) id: String,
    pub(crate) user_id: String,
    pub(crate) provider: String,
    pub(crate) kind: String,
    pub(crate) binding: String,
    pub(crate) origin: Option<String>,
    pub(crate) integration: Option<String>,
    pub(crate) header_name: Option<String>,
    pub(crate) encrypted_value: Vec<u8>,
    pub(crate) key_id: String,
    pub(crate) expires_at: Option<NaiveDateTime>,
    pub(crate) created_at: NaiveDateTime,
    pub(crate) updated_at: NaiveDateTime,
}

fn parse_kind(s: &str) -> Result<CredentialKind, StorageError> {
    CredentialKind::parse(s)
        .ok_or_else(|| StorageError::Corrupt(format!("unknown credential type '{s}'")))
}

impl CredentialRecord {
    fn info(&self) -> Result<CredentialInfo, StorageError> {
        Ok(CredentialInfo {
            id: self.id.clone(),
            provider: self.provider.clone(),
            kind: parse_kind(&self.kind)?,
            origin: self.origin.clone(),
            integration: self.integration.clone(),
            header_name: self.header_name.clone(),
            key_id: self.key_id.clone(),
            expires_at: self.expires_at.map(to_utc),
            created_at: to_utc(self.created_at),
            updated_at: to_utc(self.updated_at),
        })
    }

    pub(crate) fn decrypt(&self, keyring: &Keyring) -> Result<Credential, StorageError> {
        let user = UserId(self.user_id.clone());
        let binding = Binding {
            user: &user,
            provider: &self.provider,
            kind: &self.kind,
        };
        let secret = keyring.decrypt(&self.key_id, binding, &self.encrypted_value)?;
        Ok(Credential {
            provider: self.provider.clone(),
            kind: parse_kind(&self.kind)?,
            secret,
            origin: self.origin.clone(),
            integration: self.integration.clone(),
            header_name: self.header_name.clone(),
        })
    }
}

/// The uniqueness key of a credential within (user, provider): its integration or origin.
fn binding_of(c: &NewCredential) -> String {
    match (&c.integration, &c.origin) {
        (Some(i), _) => format!("integration:{i}"),
        (None, Some(o)) => format!("origin:{o}"),
        (None, None) => String::new(),
    }
}

/// The user's credentials for `provider` (encrypted), oldest first.
pub(crate) fn load_credentials(
    conn: &mut DbConn,
    user: &UserId,
    provider: &str,
) -> Result<Vec<CredentialRecord>, StorageError> {
    Ok(creds::table
        .filter(creds::user_id.eq(user.as_str()))
        .filter(creds::provider.eq(provider))
        .order((creds::created_at, creds::id))
        .select(CredentialRecord::as_select())
        .load(conn)?)
}

impl Database {
    /// Encrypts and stores a credential, replacing the user's previous one for the same provider
    /// and binding. Returns its metadata.
    pub async fn put_credential(
        &self,
        user: &UserId,
        credential: &NewCredential,
    ) -> Result<CredentialInfo, StorageError> {
        let keyring = self.require_keyring()?;
        let credential = credential.clone();
        let user = user.clone();
        self.run(move |conn| {
            let kind = credential.kind.as_str();
            let binding = Binding {
                user: &user,
                provider: &credential.provider,
                kind,
            };
            let (key_id, sealed) = keyring.encrypt(binding, &credential.secret)?;
            transaction(conn, Scope::User(&user), Mode::Write, |conn| {
                let bind = binding_of(&credential);
                let at = now();
                let existing = creds::table
                    .filter(creds::user_id.eq(user.as_str()))
                    .filter(creds::provider.eq(&credential.provider))
                    .filter(creds::binding.eq(&bind))
                    .select((creds::id, creds::created_at))
                    .first::<(String, NaiveDateTime)>(conn)
                    .optional()?;
                let record = CredentialRecord {
                    id: existing
                        .as_ref()
                        .map(|e| e.0.clone())
                        .unwrap_or_else(pilot_core::new_id),
                    user_id: user.0.clone(),
                    provider: credential.provider.clone(),
                    kind: kind.to_owned(),
                    binding: bind,
                    origin: credential.origin.clone(),
                    integration: credential.integration.clone(),
                    header_name: credential.header_name.clone(),
                    encrypted_value: sealed,
                    key_id,
                    expires_at: credential.expires_at.map(to_naive),
                    created_at: existing.as_ref().map(|e| e.1).unwrap_or(at),
                    updated_at: at,
                };
                if existing.is_some() {
                    diesel::update(
                        creds::table
                            .filter(creds::id.eq(&record.id))
                            .filter(creds::user_id.eq(user.as_str())),
                    )
                    .set((
                        creds::kind.eq(&record.kind),
                        creds::origin.eq(&record.origin),
                        creds::integration.eq(&record.integration),
                        creds::header_name.eq(&record.header_name),
                        creds::encrypted_value.eq(&record.encrypted_value),
                        creds::key_id.eq(&record.key_id),
                        creds::expires_at.eq(record.expires_at),
                        creds::updated_at.eq(record.updated_at),
                    ))
                    .execute(conn)?;
                } else {
                    diesel::insert_into(creds::table)
                        .values(&record)
                        .execute(conn)?;
                }
                record.info()
            })
        })
        .await
    }

    /// Metadata of the user's credentials for `provider` (empty when none is configured).
    pub async fn credential_info(
        &self,
        user: &UserId,
        provider: &str,
    ) -> Result<Vec<CredentialInfo>, StorageError> {
        let (user, provider) = (user.clone(), provider.to_owned());
        self.run(move |conn| {
            transaction(conn, Scope::User(&user), Mode::Read, |conn| {
                load_credentials(conn, &user, &provider)?
                    .iter()
                    .map(CredentialRecord::info)
                    .collect()
            })
        })
        .await
    }

    /// Deletes the user's credentials for `provider`; returns how many there were.
    pub async fn delete_credentials(
        &self,
        user: &UserId,
        provider: &str,
    ) -> Result<u64, StorageError> {
        let (user, provider) = (user.clone(), provider.to_owned());
        self.run(move |conn| {
            transaction(conn, Scope::User(&user), Mode::Write, |conn| {
                let n = diesel::delete(
                    creds::table
                        .filter(creds::user_id.eq(user.as_str()))
                        .filter(creds::provider.eq(&provider)),
                )
                .execute(conn)?;
                Ok(u64::try_from(n).unwrap_or(0))
            })
        })
        .await
    }

    /// Deletes one of the user's credentials by id; `false` when it is not theirs.
    pub async fn delete_credential(&self, user: &UserId, id: &str) -> Result<bool, StorageError> {
        let (user, id) = (user.clone(), id.to_owned());
        self.run(move |conn| {
            transaction(conn, Scope::User(&user), Mode::Write, |conn| {
                let n = diesel::delete(
                    creds::table
                        .filter(creds::user_id.eq(user.as_str()))
                        .filter(creds::id.eq(&id)),
                )
                .execute(conn)?;
                Ok(n > 0)
            })
        })
        .await
    }

    /// Re-encrypts under the active key every credential stored under another key, in batches
    /// of `batch_size` per transaction, until none is left. Safe to interrupt and run again.
    pub async fn rotate_keys(&self, batch_size: usize) -> Result<RotationReport, StorageError> {
        let mut report = RotationReport::default();
        loop {
            let n = self.rotate_keys_batch(batch_size).await?;
            if n == 0 {
                return Ok(report);
            }
            report.rotated += n;
        }
    }

    /// One step of [`Database::rotate_keys`]: re-encrypts at most `limit` values; returns how
    /// many it did (0 when the rotation is complete).
    pub async fn rotate_keys_batch(&self, limit: usize) -> Result<u64, StorageError> {
        let keyring = self.require_keyring()?;
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        self.run(move |conn| {
            let active = keyring.active_key_id().to_owned();
            let mut done: u64 = 0;
            for user in user_ids(conn)? {
                let user = UserId(user);
                let left = limit - i64::try_from(done).unwrap_or(i64::MAX);
                if left <= 0 {
                    break;
                }
                done += transaction(conn, Scope::User(&user), Mode::Write, |conn| {
                    let stale = creds::table
                        .filter(creds::user_id.eq(user.as_str()))
                        .filter(creds::key_id.ne(&active))
                        .order(creds::id)
                        .limit(left)
                        .select(CredentialRecord::as_select())
                        .load(conn)?;
                    let mut n = 0;
                    for record in stale {
                        let plain = record.decrypt(&keyring)?;
                        let binding = Binding {
                            user: &user,
                            provider: &record.provider,
                            kind: &record.kind,
                        };
                        let (key_id, sealed) = keyring.encrypt(binding, &plain.secret)?;
                        n += diesel::update(
                            creds::table
                                .filter(creds::id.eq(&record.id))
                                .filter(creds::user_id.eq(user.as_str()))
                                .filter(creds::key_id.eq(&record.key_id)),
                        )
                        .set((creds::key_id.eq(key_id), creds::encrypted_value.eq(sealed)))
                        .execute(conn)?;
                    }
                    Ok(u64::try_from(n).unwrap_or(0))
                })?;
            }
            Ok(done)
        })
        .await
    }
}

#[derive(QueryableByName)]
struct IdRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
}

/// Every user id (rotation spans users). On PostgreSQL through a SECURITY DEFINER function that
/// returns ids only.
fn user_ids(conn: &mut DbConn) -> Result<Vec<String>, StorageError> {
    Ok(match conn {
        DbConn::Pg(c) => diesel::sql_query("SELECT id FROM pilot_user_ids() AS id")
            .load::<IdRow>(c)?
            .into_iter()
            .map(|r| r.id)
            .collect(),
        DbConn::Sqlite(_) => users::table.select(users::id).order(users::id).load(conn)?,
    })
}
