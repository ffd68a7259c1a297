//! Inbound webhook tokens: a random secret per hook, stored as its SHA-256 hash, that starts one
//! plan of one user. Resolving a token happens before any user is known, so on PostgreSQL it
//! goes through a SECURITY DEFINER function that returns only the owner and plan ids.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use pilot_core::{PlanId, Secret, UserId};

use crate::conn::{DbConn, Mode, Scope, transaction};
use crate::plans::owns_plan;
use crate::schema::plan_hooks as hooks;
use crate::time::{now, to_utc};
use crate::users::{hash_token, random_token};
use crate::{Database, StorageError};

/// The prefix of every webhook token.
pub const HOOK_TOKEN_PREFIX: &str = "hook_";

/// A webhook token's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRow {
    /// The hook's id.
    pub id: String,
    /// Its owner.
    pub user_id: UserId,
    /// The plan it starts.
    pub plan_id: PlanId,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = hooks)]
struct HookRecord {
    id: String,
    user_id: String,
    plan_id: String,
    token_hash: String,
    created_at: NaiveDateTime,
}

impl From<HookRecord> for HookRow {
    fn from(r: HookRecord) -> Self {
        Self {
            id: r.id,
            user_id: UserId(r.user_id),
            plan_id: PlanId(r.plan_id),
            created_at: to_utc(r.created_at),
        }
    }
}

#[derive(QueryableByName)]
struct HookTarget {
    #[diesel(sql_type = diesel::sql_types::Text)]
    user_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    plan_id: String,
}

impl Database {
    /// Creates a webhook token for the user's plan; returns its metadata and the token, shown
    /// once. `None` when the plan is not theirs.
    pub async fn create_hook(
        &self,
        user: &UserId,
        plan: &PlanId,
    ) -> Result<Option<(HookRow, Secret)>, StorageError> {
        let (user, plan) = (user.clone(), plan.clone());
        self.run(move |conn| {
            transaction(conn, Scope::User(&user), Mode::Write, |conn| {
                if !owns_plan(conn, &user, &plan)? {
                    return Ok(None);
                }
                let token = random_token(HOOK_TOKEN_PREFIX)?;
                let record = HookRecord {
                    id: pilot_core::new_id(),
                    user_id: user.0.clone(),
                    plan_id: plan.0.clone(),
                    token_hash: hash_token(&token),
                    created_at: now(),
                };
                diesel::insert_into(hooks::table)
                    .values(&record)
                    .execute(conn)?;
                Ok(Some((record.into(), Secret::new(token))))
            })
        })
        .await
    }

    /// The user's webhook tokens for `plan` (metadata only).
    pub async fn list_hooks(
        &self,
        user: &UserId,
        plan: &PlanId,
    ) -> Result<Vec<HookRow>, StorageError> {
        let (user, plan) = (user.clone(), plan.clone());
        self.run(move |conn| {
            transaction(conn, Scope::User(&user), Mode::Read, |conn| {
                let rows = hooks::table
                    .filter(hooks::user_id.eq(user.as_str()))
                    .filter(hooks::plan_id.eq(plan.as_str()))
                    .order((hooks::created_at.desc(), hooks::id.desc()))
                    .select(HookRecord::as_select())
                    .load(conn)?;
                Ok(rows.into_iter().map(HookRow::from).collect())
            })
        })
        .await
    }

    /// Deletes one of the user's webhook tokens; `false` when it is not theirs.
    pub async fn delete_hook(&self, user: &UserId, id: &str) -> Result<bool, StorageError> {
        let (user, id) = (user.clone(), id.to_owned());
        self.run(move |conn| {
            transaction(conn, Scope::User(&user), Mode::Write, |conn| {
                let n = diesel::delete(
                    hooks::table
                        .filter(hooks::user_id.eq(user.as_str()))
                        .filter(hooks::id.eq(&id)),
                )
                .execute(conn)?;
                Ok(n > 0)
            })
        })
        .await
    }

    /// The (owner, plan) a webhook token starts, or `None` for an unknown token.
    pub async fn resolve_hook(
        &self,
        token: &str,
    ) -> Result<Option<(UserId, PlanId)>, StorageError> {
        if !token.starts_with(HOOK_TOKEN_PREFIX) || token.len() > 200 {
            return Ok(None);
        }
        let hash = hash_token(token);
        self.run(move |conn| {
            let found = match conn {
                DbConn::Pg(c) => {
                    diesel::sql_query("SELECT user_id, plan_id FROM pilot_resolve_hook($1)")
                        .bind::<diesel::sql_types::Text, _>(&hash)
                        .get_result::<HookTarget>(c)
                        .optional()?
                        .map(|t| (t.user_id, t.plan_id))
                }
                DbConn::Sqlite(_) => hooks::table
                    .filter(hooks::token_hash.eq(&hash))
                    .select((hooks::user_id, hooks::plan_id))
                    .first::<(String, String)>(conn)
                    .optional()?,
            };
            Ok(found.map(|(u, p)| (UserId(u), PlanId(p))))
        })
        .await
    }
}
