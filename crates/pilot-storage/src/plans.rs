//! Stored plans (`execution_plans`): the steps as JSON text, the derived provider list, the
//! trigger that `/schedule` uses by default. Every query is filtered by the owner in code (and
//! by row-level security on PostgreSQL).

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use pilot_core::{PlanId, Step, Trigger, UserId};

use crate::conn::{DbConn, Mode, Scope, transaction};
use crate::page::{Page, PageRequest, after, paginate};
use crate::schema::execution_plans as plans;
use crate::time::{now, to_utc};
use crate::{Database, StorageError};

/// A plan as the API stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPlan {
    /// Shown in lists and logs.
    pub name: String,
    /// The natural-language request the plan came from, if any.
    pub original_prompt: Option<String>,
    /// The steps (validated by the caller).
    pub steps: Vec<Step>,
    /// A human-readable line per step.
    pub plain_english_steps: Vec<String>,
    /// Providers the steps call (derived by the caller).
    pub required_providers: Vec<String>,
    /// How the plan is meant to start; `/schedule` without a body uses a cron trigger here.
    pub trigger: Option<Trigger>,
    /// A free-form status chosen by the API (e.g. `active`).
    pub status: String,
}

/// A stored plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanRow {
    /// The plan's id.
    pub id: PlanId,
    /// Its owner.
    pub user_id: UserId,
    /// Everything the API stored.
    pub plan: NewPlan,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
}

#[derive(Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = plans)]
#[diesel(treat_none_as_null = true)]
struct PlanRecord {
    id: String,
    user_id: String,
    name: String,
    original_prompt: Option<String>,
    plan_json: String,
    plain_english_steps: String,
    required_providers: String,
    trigger_json: Option<String>,
    status: String,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

impl PlanRecord {
    fn new(
        id: &PlanId,
        user: &UserId,
        plan: &NewPlan,
        created_at: NaiveDateTime,
    ) -> Result<Self, StorageError> {
        Ok(Self {
            id: id.0.clone(),
            user_id: user.0.clone(),
            name: plan.name.clone(),
            original_prompt: plan.original_prompt.clone(),
            plan_json: crate::stored::encode_steps(&plan.steps)?,
            plain_english_steps: serde_json::to_string(&plan.plain_english_steps)?,
            required_providers: serde_json::to_string(&plan.required_providers)?,
            trigger_json: plan
                .trigger
                .as_ref()
                .map(serde_json::to_string)
                .transpose()?,
            status: plan.status.clone(),
            created_at,
            updated_at: now(),
        })
    }

    fn into_row(self) -> Result<PlanRow, StorageError> {
        Ok(PlanRow {
            id: PlanId(self.id),
            user_id: UserId(self.user_id),
            plan: NewPlan {
                name: self.name,
                original_prompt: self.original_prompt,
                steps: crate::stored::decode_steps(&self.plan_json)?,
                plain_english_steps: serde_json::from_str(&self.plain_english_steps)?,
                required_providers: serde_json::from_str(&self.required_providers)?,
                trigger: self
                    .trigger_json
                    .as_deref()
                    .map(serde_json::from_str)
                    .transpose()?,
                status: self.status,
            },
            created_at: to_utc(self.created_at),
            updated_at: to_utc(self.updated_at),
        })
    }
}

impl Database {
    /// Stores a new plan for `user`.
    pub async fn create_plan(
        &self,
        user: &UserId,
        plan: &NewPlan,
    ) -> Result<PlanRow, StorageError> {
        let record = PlanRecord::new(&PlanId::new(), user, plan, now())?;
        let user = user.clone();
        self.run(move |conn| {
            transaction(conn, Scope::User(&user), Mode::Write, |conn| {
                diesel::insert_into(plans::table)
                    .values(&record)
                    .execute(conn)?;
                Ok(())
            })?;
            record.into_row()
        })
        .await
    }

    /// The user's plan `id`, or `None` (also when it is another user's).
    pub async fn plan(&self, user: &UserId, id: &PlanId) -> Result<Option<PlanRow>, StorageError> {
        let (user, id) = (user.clone(), id.clone());
        self.run(move |conn| {
            transaction(conn, Scope::User(&user), Mode::Read, |conn| {
                plans::table
                    .filter(plans::user_id.eq(user.as_str()))
                    .filter(plans::id.eq(id.as_str()))
                    .select(PlanRecord::as_select())
                    .get_result(conn)
                    .optional()?
                    .map(PlanRecord::into_row)
                    .transpose()
            })
        })
        .await
    }

    /// The user's plans, newest first.
    pub async fn list_plans(
        &self,
        user: &UserId,
        page: &PageRequest,
    ) -> Result<Page<PlanRow>, StorageError> {
        let position = page.position()?;
        let limit = page.clamped_limit();
        let user = user.clone();
        self.run(move |conn| {
            transaction(conn, Scope::User(&user), Mode::Read, |conn| {
                let mut query = plans::table
                    .filter(plans::user_id.eq(user.as_str()))
                    .select(PlanRecord::as_select())
                    .order((plans::created_at.desc(), plans::id.desc()))
                    .limit(limit + 1)
                    .into_boxed();
                if let Some(c) = position {
                    query = query.filter(after(plans::created_at, plans::id, c));
                }
                let rows = query.load(conn)?;
                paginate(
                    rows,
                    limit,
                    |r| (r.created_at, r.id.clone()),
                    PlanRecord::into_row,
                )
            })
        })
        .await
    }

    /// Replaces the user's plan `id`; `None` when there is no such plan of theirs. Runs already
    /// created keep their own snapshot of the steps.
    pub async fn update_plan(
        &self,
        user: &UserId,
        id: &PlanId,
        plan: &NewPlan,
    ) -> Result<Option<PlanRow>, StorageError> {
        let plan = plan.clone();
        let (user, id) = (user.clone(), id.clone());
        self.run(move |conn| {
            transaction(conn, Scope::User(&user), Mode::Write, |conn| {
                let target = plans::table
                    .filter(plans::user_id.eq(user.as_str()))
                    .filter(plans::id.eq(id.as_str()));
                let Some(created_at) = target
                    .select(plans::created_at)
                    .first::<NaiveDateTime>(conn)
                    .optional()?
                else {
                    return Ok(None);
                };
                let record = PlanRecord::new(&id, &user, &plan, created_at)?;
                diesel::update(target).set(&record).execute(conn)?;
                record.into_row().map(Some)
            })
        })
        .await
    }

    /// Deletes the user's plan `id` (and its schedule and webhook tokens); `false` when there is
    /// no such plan of theirs. Its runs and logs stay.
    pub async fn delete_plan(&self, user: &UserId, id: &PlanId) -> Result<bool, StorageError> {
        let (user, id) = (user.clone(), id.clone());
        self.run(move |conn| {
            transaction(conn, Scope::User(&user), Mode::Write, |conn| {
                let n = diesel::delete(
                    plans::table
                        .filter(plans::user_id.eq(user.as_str()))
                        .filter(plans::id.eq(id.as_str())),
                )
                .execute(conn)?;
                Ok(n > 0)
            })
        })
        .await
    }
}

/// What deleting a plan that may have runs in progress did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanDeletion {
    /// No such plan of the user's.
    Missing,
    /// Not deleted: this many of its runs are queued or running (ask again with `force`).
    Busy(u64),
    /// Deleted; this many queued runs were cancelled and running ones asked to cancel.
    Deleted(u64),
}

impl Database {
    /// Deletes the user's plan `id` unless runs of it are queued or running; with `force` those
    /// runs are cancelled (queued ones at once, running ones at their next boundary) and the
    /// plan is deleted, in one transaction. Finished runs and logs stay.
    pub async fn delete_plan_if_idle(
        &self,
        user: &UserId,
        id: &PlanId,
        force: bool,
    ) -> Result<PlanDeletion, StorageError> {
        use crate::schema::runs;
        let (user, id) = (user.clone(), id.clone());
        self.run(move |conn| {
            transaction(conn, Scope::User(&user), Mode::Write, |conn| {
                if !owns_plan(conn, &user, &id)? {
                    return Ok(PlanDeletion::Missing);
                }
                let of_plan = || {
                    runs::table
                        .filter(runs::user_id.eq(user.as_str()))
                        .filter(runs::plan_id.eq(id.as_str()))
                };
                let n: i64 = of_plan()
                    .filter(runs::status.eq_any(["queued", "running"]))
                    .count()
                    .get_result(conn)?;
                let n = u64::try_from(n).unwrap_or(0);
                if n > 0 && !force {
                    return Ok(PlanDeletion::Busy(n));
                }
                if n > 0 {
                    let at = crate::time::db_now(conn)?;
                    diesel::update(of_plan().filter(runs::status.eq("queued")))
                        .set((
                            runs::status.eq("cancelled"),
                            runs::cancel_requested.eq(true),
                            runs::finished_at.eq(Some(at)),
                            runs::updated_at.eq(at),
                        ))
                        .execute(conn)?;
                    diesel::update(of_plan().filter(runs::status.eq("running")))
                        .set((runs::cancel_requested.eq(true), runs::updated_at.eq(at)))
                        .execute(conn)?;
                }
                diesel::delete(
                    plans::table
                        .filter(plans::user_id.eq(user.as_str()))
                        .filter(plans::id.eq(id.as_str())),
                )
                .execute(conn)?;
                Ok(PlanDeletion::Deleted(n))
            })
        })
        .await
    }
}

/// Whether `plan` is one of `user`'s plans; for writes that attach something to a plan, inside
/// their transaction.
pub(crate) fn owns_plan(
    conn: &mut DbConn,
    user: &UserId,
    plan: &PlanId,
) -> Result<bool, StorageError> {
    let n = plans::table
        .filter(plans::user_id.eq(user.as_str()))
        .filter(plans::id.eq(plan.as_str()))
        .count()
        .get_result::<i64>(conn)?;
    Ok(n > 0)
}
