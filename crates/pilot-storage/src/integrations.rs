//! Custom integrations: a user's named APIs (base URL, auth scheme, default headers). Names are
//! unique per user (the unique index includes user_id, so it says nothing about other users).

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use pilot_core::{CredentialKind, Integration, UserId};

use crate::conn::{DbConn, Mode, Scope, transaction};
use crate::page::{Page, PageRequest, after, paginate};
use crate::schema::custom_integrations as integrations;
use crate::time::{now, to_utc};
use crate::{Database, StorageError};

/// A stored custom integration.
#[derive(Debug, Clone, PartialEq)]
pub struct IntegrationRow {
    /// The row's id.
    pub id: String,
    /// Its owner.
    pub user_id: UserId,
    /// The integration itself.
    pub integration: Integration,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
}

#[derive(Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = integrations)]
#[diesel(treat_none_as_null = true)]
struct IntegrationRecord {
    id: String,
    user_id: String,
    name: String,
    base_url: String,
    auth_scheme: Option<String>,
    auth_header: Option<String>,
    default_headers_json: String,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

impl IntegrationRecord {
    fn new(
        id: String,
        user: &UserId,
        i: &Integration,
        created_at: NaiveDateTime,
    ) -> Result<Self, StorageError> {
        Ok(Self {
            id,
            user_id: user.0.clone(),
            name: i.name.clone(),
            base_url: i.base_url.clone(),
            auth_scheme: i.auth_scheme.map(|k| k.as_str().to_owned()),
            auth_header: i.auth_header.clone(),
            default_headers_json: serde_json::to_string(&i.default_headers)?,
            created_at,
            updated_at: now(),
        })
    }

    fn into_row(self) -> Result<IntegrationRow, StorageError> {
        let auth_scheme = self
            .auth_scheme
            .as_deref()
            .map(|s| {
                CredentialKind::parse(s)
                    .ok_or_else(|| StorageError::Corrupt(format!("unknown auth scheme '{s}'")))
            })
            .transpose()?;
        Ok(IntegrationRow {
            id: self.id,
            user_id: UserId(self.user_id),
            integration: Integration {
                name: self.name,
                base_url: self.base_url,
                auth_scheme,
                auth_header: self.auth_header,
                default_headers: serde_json::from_str(&self.default_headers_json)?,
            },
            created_at: to_utc(self.created_at),
            updated_at: to_utc(self.updated_at),
        })
    }
}

fn name_taken(
    conn: &mut DbConn,
    user: &UserId,
    name: &str,
    except: Option<&str>,
) -> Result<bool, StorageError> {
    let mut query = integrations::table
        .filter(integrations::user_id.eq(user.as_str()))
        .filter(integrations::name.eq(name))
        .into_boxed();
    if let Some(id) = except {
        query = query.filter(integrations::id.ne(id));
    }
    Ok(query.count().get_result::<i64>(conn)? > 0)
}

/// The user's integration called `name`.
pub(crate) fn integration_named(
    conn: &mut DbConn,
    user: &UserId,
    name: &str,
) -> Result<Option<IntegrationRow>, StorageError> {
    integrations::table
        .filter(integrations::user_id.eq(user.as_str()))
        .filter(integrations::name.eq(name))
        .select(IntegrationRecord::as_select())
        .first(conn)
        .optional()?
        .map(IntegrationRecord::into_row)
        .transpose()
}

impl Database {
    /// Stores a new integration; [`StorageError::Conflict`] when the user already has one with
    /// that name.
    pub async fn create_integration(
        &self,
        user: &UserId,
        integration: &Integration,
    ) -> Result<IntegrationRow, StorageError> {
        let record = IntegrationRecord::new(pilot_core::new_id(), user, integration, now())?;
        let user = user.clone();
        self.run(move |conn| {
            transaction(conn, Scope::User(&user), Mode::Write, |conn| {
                if name_taken(conn, &user, &record.name, None)? {
                    return Err(StorageError::Conflict(format!(
                        "an integration named '{}' exists",
                        record.name
                    )));
                }
                diesel::insert_into(integrations::table)
                    .values(&record)
                    .execute(conn)?;
                Ok(())
            })?;
            record.into_row()
        })
        .await
    }

    /// The user's integration `id`.
    pub async fn integration_by_id(
        &self,
        user: &UserId,
        id: &str,
    ) -> Result<Option<IntegrationRow>, StorageError> {
        let (user, id) = (user.clone(), id.to_owned());
        self.run(move |conn| {
            transaction(conn, Scope::User(&user), Mode::Read, |conn| {
                integrations::table
                    .filter(integrations::user_id.eq(user.as_str()))
                    .filter(integrations::id.eq(&id))
                    .select(IntegrationRecord::as_select())
                    .first(conn)
                    .optional()?
                    .map(IntegrationRecord::into_row)
                    .transpose()
            })
        })
        .await
    }

    /// The user's integration called `name`.
    pub async fn integration_by_name(
        &self,
        user: &UserId,
        name: &str,
    ) -> Result<Option<IntegrationRow>, StorageError> {
        let (user, name) = (user.clone(), name.to_owned());
        self.run(move |conn| {
            transaction(conn, Scope::User(&user), Mode::Read, |conn| {
                integration_named(conn, &user, &name)
            })
        })
        .await
    }

    /// The user's integrations, newest first.
    pub async fn list_integrations(
        &self,
        user: &UserId,
        page: &PageRequest,
    ) -> Result<Page<IntegrationRow>, StorageError> {
        let position = page.position()?;
        let limit = page.clamped_limit();
        let user = user.clone();
        self.run(move |conn| {
            transaction(conn, Scope::User(&user), Mode::Read, |conn| {
                let mut query = integrations::table
                    .filter(integrations::user_id.eq(user.as_str()))
                    .select(IntegrationRecord::as_select())
                    .order((integrations::created_at.desc(), integrations::id.desc()))
                    .limit(limit + 1)
                    .into_boxed();
                if let Some(c) = position {
                    query = query.filter(after(integrations::created_at, integrations::id, c));
                }
                let rows = query.load(conn)?;
                paginate(
                    rows,
                    limit,
                    |r| (r.created_at, r.id.clone()),
                    IntegrationRecord::into_row,
                )
            })
        })
        .await
    }

    /// Replaces the user's integration `id`; `None` when it is not theirs;
    /// [`StorageError::Conflict`] when the new name is another of theirs.
    pub async fn update_integration(
        &self,
        user: &UserId,
        id: &str,
        integration: &Integration,
    ) -> Result<Option<IntegrationRow>, StorageError> {
        let (user, id, integration) = (user.clone(), id.to_owned(), integration.clone());
        self.run(move |conn| {
            transaction(conn, Scope::User(&user), Mode::Write, |conn| {
                let target = integrations::table
                    .filter(integrations::user_id.eq(user.as_str()))
                    .filter(integrations::id.eq(&id));
                let Some(created_at) = target
                    .select(integrations::created_at)
                    .first::<NaiveDateTime>(conn)
                    .optional()?
                else {
                    return Ok(None);
                };
                if name_taken(conn, &user, &integration.name, Some(&id))? {
                    return Err(StorageError::Conflict(format!(
                        "an integration named '{}' exists",
                        integration.name
                    )));
                }
                let record = IntegrationRecord::new(id.clone(), &user, &integration, created_at)?;
                diesel::update(target).set(&record).execute(conn)?;
                record.into_row().map(Some)
            })
        })
        .await
    }

    /// Deletes the user's integration `id`; `false` when it is not theirs.
    pub async fn delete_integration(&self, user: &UserId, id: &str) -> Result<bool, StorageError> {
        let (user, id) = (user.clone(), id.to_owned());
        self.run(move |conn| {
            transaction(conn, Scope::User(&user), Mode::Write, |conn| {
                let n = diesel::delete(
                    integrations::table
                        .filter(integrations::user_id.eq(user.as_str()))
                        .filter(integrations::id.eq(&id)),
                )
                .execute(conn)?;
                Ok(n > 0)
            })
        })
        .await
    }
}
