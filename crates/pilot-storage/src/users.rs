//! Users and API tokens. A token is `pilot_` + base64url of 32 random bytes, shown once and
//! stored only as its SHA-256 hex digest. On PostgreSQL the lookups that happen before a user is
//! known (authenticate, user count, user by name) go through SECURITY DEFINER functions that
//! return only ids, so the application role never reads another user's rows.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use pilot_core::{Secret, UserId};
use sha2::{Digest, Sha256};

use crate::conn::{DbConn, Mode, Scope, transaction};
use crate::schema::{api_tokens, users};
use crate::time::{now, to_utc};
use crate::{Database, StorageError};

/// A user (tenant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    /// The id every owned row carries.
    pub id: UserId,
    /// Unique login name.
    pub name: String,
    /// Whether the user administers the server.
    pub is_admin: bool,
    /// When the user was created.
    pub created_at: DateTime<Utc>,
}

/// An API token's metadata; the token itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// The token's id (for revocation).
    pub id: String,
    /// Its owner.
    pub user_id: UserId,
    /// A label chosen at creation.
    pub label: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = users)]
struct UserRecord {
    id: String,
    name: String,
    is_admin: bool,
    created_at: chrono::NaiveDateTime,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = api_tokens)]
struct TokenRecord {
    id: String,
    user_id: String,
    label: String,
    token_hash: String,
    created_at: chrono::NaiveDateTime,
    revoked_at: Option<chrono::NaiveDateTime>,
}

impl From<UserRecord> for UserRow {
    fn from(r: UserRecord) -> Self {
        Self {
            id: UserId(r.id),
            name: r.name,
            is_admin: r.is_admin,
            created_at: to_utc(r.created_at),
        }
    }
}

impl From<TokenRecord> for TokenRow {
    fn from(r: TokenRecord) -> Self {
        Self {
            id: r.id,
            user_id: UserId(r.user_id),
            label: r.label,
            created_at: to_utc(r.created_at),
            revoked_at: r.revoked_at.map(to_utc),
        }
    }
}

/// The prefix of every API token.
pub const TOKEN_PREFIX: &str = "pilot_";

/// SHA-256 hex of a token or hook secret: what is stored and looked up.
pub(crate) fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh random token with the given prefix: 256 random bits in base64url.
pub(crate) fn random_token(prefix: &str) -> Result<String, StorageError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| StorageError::Database(format!("no randomness: {e}")))?;
    Ok(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

#[derive(QueryableByName)]
struct OptionalId {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    id: Option<String>,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

impl Database {
    /// Creates a user; [`StorageError::Conflict`] when the name is taken.
    pub async fn create_user(&self, name: &str, is_admin: bool) -> Result<UserRow, StorageError> {
        let name = name.trim().to_owned();
        if name.is_empty() || name.len() > 200 {
            return Err(StorageError::InvalidInput(
                "a user name must be 1 to 200 characters".to_owned(),
            ));
        }
        self.run(move |conn| {
            if user_id_by_name(conn, &name)?.is_some() {
                return Err(StorageError::Conflict(format!(
                    "user '{name}' already exists"
                )));
            }
            let record = UserRecord {
                id: UserId::new().0,
                name,
                is_admin,
                created_at: now(),
            };
            let user = UserId(record.id.clone());
            transaction(conn, Scope::User(&user), Mode::Write, |conn| {
                diesel::insert_into(users::table)
                    .values(&record)
                    .execute(conn)?;
                Ok(())
            })?;
            Ok(record.into())
        })
        .await
    }

    /// How many users exist (the server creates an admin on first start when there are none).
    pub async fn user_count(&self) -> Result<u64, StorageError> {
        self.run(|conn| {
            let n = match conn {
                DbConn::Pg(c) => {
                    diesel::sql_query("SELECT pilot_user_count() AS n")
                        .get_result::<Count>(c)?
                        .n
                }
                DbConn::Sqlite(_) => users::table.count().get_result::<i64>(conn)?,
            };
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    /// The user called `name`, if any.
    pub async fn user_by_name(&self, name: &str) -> Result<Option<UserRow>, StorageError> {
        let name = name.to_owned();
        self.run(move |conn| {
            let Some(id) = user_id_by_name(conn, &name)? else {
                return Ok(None);
            };
            load_user(conn, &UserId(id))
        })
        .await
    }

    /// The user with id `id`, if any.
    pub async fn user(&self, id: &UserId) -> Result<Option<UserRow>, StorageError> {
        let id = id.clone();
        self.run(move |conn| load_user(conn, &id)).await
    }

    /// Creates an API token for `user`; returns its metadata and the token, shown once.
    pub async fn create_token(
        &self,
        user: &UserId,
        label: &str,
    ) -> Result<(TokenRow, Secret), StorageError> {
        let user = user.clone();
        let label = label.to_owned();
        self.run(move |conn| {
            let token = random_token(TOKEN_PREFIX)?;
            let record = TokenRecord {
                id: pilot_core::new_id(),
                user_id: user.0.clone(),
                label,
                token_hash: hash_token(&token),
                created_at: now(),
                revoked_at: None,
            };
            transaction(conn, Scope::User(&user), Mode::Write, |conn| {
                let exists = users::table
                    .filter(users::id.eq(user.as_str()))
                    .count()
                    .get_result::<i64>(conn)?
                    > 0;
                if !exists {
                    return Err(StorageError::NotFound);
                }
                diesel::insert_into(api_tokens::table)
                    .values(&record)
                    .execute(conn)?;
                Ok(())
            })?;
            Ok((record.into(), Secret::new(token)))
        })
        .await
    }

    /// The user's tokens (metadata only), newest first.
    pub async fn list_tokens(&self, user: &UserId) -> Result<Vec<TokenRow>, StorageError> {
        let user = user.clone();
        self.run(move |conn| {
            transaction(conn, Scope::User(&user), Mode::Read, |conn| {
                let rows = api_tokens::table
                    .filter(api_tokens::user_id.eq(user.as_str()))
                    .order((api_tokens::created_at.desc(), api_tokens::id.desc()))
                    .select(TokenRecord::as_select())
                    .load(conn)?;
                Ok(rows.into_iter().map(TokenRow::from).collect())
            })
        })
        .await
    }

    /// Revokes one of the user's tokens; `false` when it is not theirs or does not exist.
    pub async fn revoke_token(&self, user: &UserId, token_id: &str) -> Result<bool, StorageError> {
        let user = user.clone();
        let token_id = token_id.to_owned();
        self.run(move |conn| {
            transaction(conn, Scope::User(&user), Mode::Write, |conn| {
                let n = diesel::update(
                    api_tokens::table
                        .filter(api_tokens::user_id.eq(user.as_str()))
                        .filter(api_tokens::id.eq(&token_id))
                        .filter(api_tokens::revoked_at.is_null()),
                )
                .set(api_tokens::revoked_at.eq(Some(now())))
                .execute(conn)?;
                Ok(n > 0)
            })
        })
        .await
    }

    /// The owner of a live (not revoked) token, or `None` for an unknown or revoked one.
    pub async fn authenticate(&self, token: &str) -> Result<Option<UserId>, StorageError> {
        if !token.starts_with(TOKEN_PREFIX) || token.len() > 200 {
            return Ok(None);
        }
        let hash = hash_token(token);
        self.run(move |conn| {
            let id = match conn {
                DbConn::Pg(c) => {
                    diesel::sql_query("SELECT pilot_authenticate($1) AS id")
                        .bind::<diesel::sql_types::Text, _>(&hash)
                        .get_result::<OptionalId>(c)?
                        .id
                }
                DbConn::Sqlite(_) => api_tokens::table
                    .filter(api_tokens::token_hash.eq(&hash))
                    .filter(api_tokens::revoked_at.is_null())
                    .select(api_tokens::user_id)
                    .get_result::<String>(conn)
                    .optional()?,
            };
            Ok(id.map(UserId))
        })
        .await
    }
}

fn user_id_by_name(conn: &mut DbConn, name: &str) -> Result<Option<String>, StorageError> {
    Ok(match conn {
        DbConn::Pg(c) => {
            diesel::sql_query("SELECT pilot_user_id_by_name($1) AS id")
                .bind::<diesel::sql_types::Text, _>(name)
                .get_result::<OptionalId>(c)?
                .id
        }
        DbConn::Sqlite(_) => users::table
            .filter(users::name.eq(name))
            .select(users::id)
            .get_result::<String>(conn)
            .optional()?,
    })
}

fn load_user(conn: &mut DbConn, id: &UserId) -> Result<Option<UserRow>, StorageError> {
    transaction(conn, Scope::User(id), Mode::Read, |conn| {
        let row = users::table
            .filter(users::id.eq(id.as_str()))
            .select(UserRecord::as_select())
            .get_result(conn)
            .optional()?;
        Ok(row.map(UserRow::from))
    })
}
