//! The route table: every route of the API as data. The same table mounts the routes
//! ([`config`]) and generates the OpenAPI document (`crate::openapi`), so the document cannot
//! miss a route or describe one that is not served; the isolation tests enumerate it through
//! [`routes`].
//!
//! Why a table rather than utoipa: utoipa derives schemas from types but still needs every path
//! listed by hand in an `#[openapi(paths(...))]` attribute, separate from where routes are
//! mounted, which is the drift this table exists to prevent; it would also add a proc-macro
//! dependency tree to the build. Schemas are written beside the table (`crate::openapi`) and
//! a test checks that each request schema's example deserializes into the handler's input type.

use actix_web::http::Method;
use actix_web::web;

use crate::ApiError;
use crate::handlers::{credentials, generate, integrations, logs, plans, runs, schedules, system};

/// An HTTP method the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// GET
    Get,
    /// POST
    Post,
    /// PUT
    Put,
    /// DELETE
    Delete,
}

impl Verb {
    /// The method's name, upper case.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
        }
    }

    pub(crate) fn method(self) -> Method {
        match self {
            Self::Get => Method::GET,
            Self::Post => Method::POST,
            Self::Put => Method::PUT,
            Self::Delete => Method::DELETE,
        }
    }
}

/// What a path parameter names; the isolation tests build fixtures by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ParamKind {
    /// A plan id (UUID).
    Plan,
    /// A run id (UUID).
    Run,
    /// A custom integration id (UUID).
    Integration,
    /// A webhook token's id (UUID).
    Hook,
    /// An inbound webhook token (the credential of `POST /api/hooks/{token}`).
    HookToken,
    /// A provider name (a catalogue entry, not a tenant's object).
    Provider,
    /// A step id within the run of the path.
    Step,
}

/// One route as other code sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteInfo {
    /// The method.
    pub verb: Verb,
    /// The path pattern, e.g. `/api/plans/{id}`.
    pub path: &'static str,
    /// The OpenAPI operation id.
    pub operation_id: &'static str,
    /// Whether the route requires a bearer token.
    pub auth: bool,
    /// The path parameters, in order.
    pub params: &'static [(&'static str, ParamKind)],
    /// Whether the route takes a JSON body.
    pub body: bool,
}

/// A query parameter's type, for the OpenAPI document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueryType {
    /// `limit`: an integer from 1 to 200.
    Limit,
    /// `cursor`: an opaque string.
    Cursor,
    /// An id (UUID).
    Id,
    /// An optional filter id (UUID); an empty value counts as absent (`?plan_id=&run_id=`).
    FilterId,
    /// A string.
    Text,
    /// An integer in a range.
    Integer(u32, u32),
    /// An RFC 3339 date-time.
    DateTime,
    /// `true` or `false`.
    Boolean,
    /// A crontab expression.
    Cron,
    /// An IANA time zone name.
    TimeZone,
}

/// A documented query parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueryParam {
    pub(crate) name: &'static str,
    pub(crate) kind: QueryType,
    pub(crate) required: bool,
    pub(crate) description: &'static str,
}

/// A documented response: status, schema name (in components) and description.
pub(crate) type Response = (u16, Option<&'static str>, &'static str);

/// One route: what it is, its documentation, and its handler.
pub(crate) struct Route {
    pub(crate) info: RouteInfo,
    pub(crate) summary: &'static str,
    pub(crate) tag: &'static str,
    pub(crate) query: &'static [QueryParam],
    /// The request schema's name and whether the body is required.
    pub(crate) request: Option<(&'static str, bool)>,
    pub(crate) responses: &'static [Response],
    pub(crate) mount: fn(actix_web::Route) -> actix_web::Route,
}

/// The filters of `GET /api/runs`, with paging.
const RUN_FILTERS: &[QueryParam] = &[
    PAGE[0],
    PAGE[1],
    QueryParam {
        name: "status",
        kind: QueryType::Text,
        required: false,
        description: "Runs in any of these statuses, comma-separated: queued, running, succeeded, failed, cancelled.",
    },
    QueryParam {
        name: "plan_id",
        kind: QueryType::FilterId,
        required: false,
        description: "Runs of this plan.",
    },
    QueryParam {
        name: "trigger",
        kind: QueryType::Text,
        required: false,
        description: "Runs started this way: api, schedule, webhook or step.",
    },
    QueryParam {
        name: "created_after",
        kind: QueryType::DateTime,
        required: false,
        description: "Runs created at or after this time (RFC 3339).",
    },
    QueryParam {
        name: "created_before",
        kind: QueryType::DateTime,
        required: false,
        description: "Runs created before this time (RFC 3339).",
    },
];

const PAGE: &[QueryParam] = &[
    QueryParam {
        name: "limit",
        kind: QueryType::Limit,
        required: false,
        description: "Items per page, 1 to 200 (default 50).",
    },
    QueryParam {
        name: "cursor",
        kind: QueryType::Cursor,
        required: false,
        description: "The `next_cursor` of the previous page.",
    },
];

const LOG_QUERY: &[QueryParam] = &[
    QueryParam {
        name: "plan_id",
        kind: QueryType::FilterId,
        required: false,
        description: "Only this plan's rows.",
    },
    QueryParam {
        name: "run_id",
        kind: QueryType::FilterId,
        required: false,
        description: "Only this run's rows.",
    },
    PAGE[0],
    PAGE[1],
];

const PREVIEW_QUERY: &[QueryParam] = &[
    QueryParam {
        name: "cron",
        kind: QueryType::Cron,
        required: true,
        description: "A 5-field (or 6-field, seconds first) crontab expression.",
    },
    QueryParam {
        name: "timezone",
        kind: QueryType::TimeZone,
        required: false,
        description: "An IANA time zone (default UTC).",
    },
    QueryParam {
        name: "count",
        kind: QueryType::Integer(1, 100),
        required: false,
        description: "How many fire times, 1 to 100 (default 5).",
    },
    QueryParam {
        name: "after",
        kind: QueryType::DateTime,
        required: false,
        description: "List fires strictly after this RFC 3339 time (default now).",
    },
];

const CREDENTIAL_DELETE_QUERY: &[QueryParam] = &[QueryParam {
    name: "id",
    kind: QueryType::Id,
    required: false,
    description: "Delete only this credential (default: all of the provider's).",
}];

const PLAN_ID: &[(&str, ParamKind)] = &[("id", ParamKind::Plan)];
const RUN_ID: &[(&str, ParamKind)] = &[("id", ParamKind::Run)];
const RUN_STEP: &[(&str, ParamKind)] = &[("id", ParamKind::Run), ("step_id", ParamKind::Step)];
const INTEGRATION_ID: &[(&str, ParamKind)] = &[("id", ParamKind::Integration)];
const HOOK_ID: &[(&str, ParamKind)] = &[("id", ParamKind::Plan), ("hook_id", ParamKind::Hook)];
const HOOK_TOKEN: &[(&str, ParamKind)] = &[("token", ParamKind::HookToken)];
const PROVIDER: &[(&str, ParamKind)] = &[("provider", ParamKind::Provider)];

/// A route's info with the usual defaults: authenticated, no params, no body.
const fn info(verb: Verb, path: &'static str, operation_id: &'static str) -> RouteInfo {
    RouteInfo {
        verb,
        path,
        operation_id,
        auth: true,
        params: &[],
        body: false,
    }
}

/// Every route, grouped by area.
pub(crate) static ROUTES: &[Route] = &[
    // System.
    Route {
        info: RouteInfo {
            auth: false,
            ..info(Verb::Get, "/api/health", "health")
        },
        summary: "Liveness: the process answers",
        tag: "system",
        query: &[],
        request: None,
        responses: &[(200, Some("Health"), "The process is up.")],
        mount: |r| r.to(system::health),
    },
    Route {
        info: RouteInfo {
            auth: false,
            ..info(Verb::Get, "/api/ready", "ready")
        },
        summary: "Readiness: the database answers",
        tag: "system",
        query: &[],
        request: None,
        responses: &[
            (200, Some("Ready"), "Ready to serve."),
            (503, Some("Error"), "The database is unreachable."),
        ],
        mount: |r| r.to(system::ready),
    },
    Route {
        info: RouteInfo {
            auth: false,
            ..info(Verb::Get, "/api/openapi.json", "openapi")
        },
        summary: "This OpenAPI document",
        tag: "system",
        query: &[],
        request: None,
        responses: &[(200, None, "The OpenAPI 3.1 document.")],
        mount: |r| r.to(system::openapi),
    },
    Route {
        info: RouteInfo {
            auth: false,
            ..info(Verb::Get, "/metrics", "metrics")
        },
        summary: "Prometheus metrics (OpenMetrics text)",
        tag: "system",
        query: &[],
        request: None,
        responses: &[(200, None, "Metrics in the OpenMetrics text format.")],
        mount: |r| r.to(system::metrics),
    },
    Route {
        info: info(Verb::Get, "/api/providers", "listProviders"),
        summary: "Every provider with its actions, params and credential types",
        tag: "providers",
        query: &[],
        request: None,
        responses: &[(200, Some("ProviderList"), "The provider catalogue.")],
        mount: |r| r.to(system::providers),
    },
    // Plans.
    Route {
        info: info(Verb::Get, "/api/plans", "listPlans"),
        summary: "The caller's plans, newest first",
        tag: "plans",
        query: PAGE,
        request: None,
        responses: &[(200, Some("PlanPage"), "One page of plans.")],
        mount: |r| r.to(plans::list),
    },
    Route {
        info: RouteInfo {
            body: true,
            ..info(Verb::Post, "/api/plans", "createPlan")
        },
        summary: "Validate and store a plan (a webhook trigger also issues a webhook token)",
        tag: "plans",
        query: &[],
        request: Some(("PlanInput", true)),
        responses: &[(201, Some("Plan"), "The stored plan.")],
        mount: |r| r.to(plans::create),
    },
    // Before `/api/plans/{id}`: resources match in this order, and `generate` is not an id.
    Route {
        info: RouteInfo {
            body: true,
            ..info(Verb::Post, "/api/plans/generate", "generatePlan")
        },
        summary: "Draft a validated plan from a plain-English prompt with your own AI key (not saved)",
        tag: "plans",
        query: &[],
        request: Some(("GenerateRequest", true)),
        responses: &[
            (
                200,
                Some("PlanDraft"),
                "The draft: POST its `plan` to /api/plans to save it.",
            ),
            (
                422,
                Some("Error"),
                "No key is stored for the provider, or the model's plan was still invalid after a second attempt (`details.errors`, `details.draft`).",
            ),
            (
                502,
                Some("Error"),
                "The model call failed or its answer was not JSON (`details.retryable`).",
            ),
        ],
        mount: |r| r.to(generate::generate),
    },
    Route {
        info: RouteInfo {
            body: true,
            ..info(Verb::Post, "/api/plans/validate", "validatePlan")
        },
        summary: "Check a plan as saving it would, without saving it: every problem found",
        tag: "plans",
        query: &[],
        request: Some(("PlanInput", true)),
        responses: &[(
            200,
            Some("PlanValidation"),
            "Whether the plan is valid, and every problem (step, field, message).",
        )],
        mount: |r| r.to(plans::validate),
    },
    Route {
        info: RouteInfo {
            params: PLAN_ID,
            ..info(Verb::Get, "/api/plans/{id}", "getPlan")
        },
        summary: "One plan",
        tag: "plans",
        query: &[],
        request: None,
        responses: &[(200, Some("Plan"), "The plan.")],
        mount: |r| r.to(plans::get),
    },
    Route {
        info: RouteInfo {
            params: PLAN_ID,
            body: true,
            ..info(Verb::Put, "/api/plans/{id}", "updatePlan")
        },
        summary: "Validate and replace a plan (runs keep their own snapshot)",
        tag: "plans",
        query: &[],
        request: Some(("PlanInput", true)),
        responses: &[(200, Some("Plan"), "The replaced plan.")],
        mount: |r| r.to(plans::update),
    },
    Route {
        info: RouteInfo {
            params: PLAN_ID,
            ..info(Verb::Delete, "/api/plans/{id}", "deletePlan")
        },
        summary: "Delete a plan, its schedule and webhook tokens (runs and logs stay)",
        tag: "plans",
        query: &[QueryParam {
            name: "force",
            kind: QueryType::Boolean,
            required: false,
            description: "Also when runs of the plan are queued or running: they are cancelled (without it, such a plan answers 409).",
        }],
        request: None,
        responses: &[(204, None, "Deleted.")],
        mount: |r| r.to(plans::delete),
    },
    Route {
        info: RouteInfo {
            params: PLAN_ID,
            ..info(Verb::Post, "/api/plans/{id}/hooks", "createPlanHook")
        },
        summary: "Issue a webhook token for the plan (shown once)",
        tag: "plans",
        query: &[],
        request: None,
        responses: &[(201, Some("HookIssued"), "The new token.")],
        mount: |r| r.to(plans::create_hook),
    },
    Route {
        info: RouteInfo {
            params: PLAN_ID,
            ..info(Verb::Get, "/api/plans/{id}/hooks", "listPlanHooks")
        },
        summary: "The plan's webhook tokens (metadata only)",
        tag: "plans",
        query: &[],
        request: None,
        responses: &[(200, Some("HookPage"), "The plan's tokens.")],
        mount: |r| r.to(plans::list_hooks),
    },
    Route {
        info: RouteInfo {
            params: HOOK_ID,
            ..info(
                Verb::Delete,
                "/api/plans/{id}/hooks/{hook_id}",
                "deletePlanHook",
            )
        },
        summary: "Revoke one webhook token",
        tag: "plans",
        query: &[],
        request: None,
        responses: &[(204, None, "Revoked.")],
        mount: |r| r.to(plans::delete_hook),
    },
    Route {
        info: RouteInfo {
            params: PLAN_ID,
            ..info(Verb::Get, "/api/plans/{id}/runs", "listPlanRuns")
        },
        summary: "The plan's runs, newest first",
        tag: "runs",
        query: PAGE,
        request: None,
        responses: &[(200, Some("RunPage"), "One page of runs.")],
        mount: |r| r.to(runs::list_for_plan),
    },
    Route {
        info: RouteInfo {
            params: PLAN_ID,
            body: true,
            ..info(Verb::Post, "/api/plans/{id}/schedule", "schedulePlan")
        },
        summary: "Schedule the plan (without a body: its stored cron trigger)",
        tag: "schedules",
        query: &[],
        request: Some(("ScheduleInput", false)),
        responses: &[(
            200,
            Some("Schedule"),
            "The schedule with its next run time.",
        )],
        mount: |r| r.to(schedules::schedule),
    },
    Route {
        info: RouteInfo {
            params: PLAN_ID,
            ..info(Verb::Post, "/api/plans/{id}/unschedule", "unschedulePlan")
        },
        summary: "Remove the plan's schedule",
        tag: "schedules",
        query: &[],
        request: None,
        responses: &[(200, Some("Unscheduled"), "Whether a schedule was removed.")],
        mount: |r| r.to(schedules::unschedule),
    },
    // Execution.
    Route {
        info: RouteInfo {
            body: true,
            ..info(Verb::Post, "/api/execute", "execute")
        },
        summary: "Run a stored or ad-hoc plan: inline (200 with every step) or queued (202)",
        tag: "runs",
        query: &[],
        request: Some(("ExecuteRequest", true)),
        responses: &[
            (
                200,
                Some("Run"),
                "Inline: the finished run with every step's outcome.",
            ),
            (
                202,
                Some("RunAccepted"),
                "`async: true`: the run is committed and queued.",
            ),
        ],
        mount: |r| r.to(runs::execute),
    },
    Route {
        info: RouteInfo {
            body: true,
            ..info(Verb::Post, "/api/execute-step", "executeStep")
        },
        summary: "Run one provider action with the given params (logged like any run)",
        tag: "runs",
        query: &[],
        request: Some(("ExecuteStepRequest", true)),
        responses: &[
            (200, Some("StepResult"), "The provider's result."),
            (
                202,
                Some("RunAccepted"),
                "The run's lease moved to a worker before the step ended; the worker finishes it.",
            ),
        ],
        mount: |r| r.to(runs::execute_step),
    },
    Route {
        info: info(Verb::Get, "/api/runs", "listRuns"),
        summary: "Your runs across plans, newest first, with filters",
        tag: "runs",
        query: RUN_FILTERS,
        request: None,
        responses: &[(200, Some("RunPage"), "One page of runs.")],
        mount: |r| r.to(runs::list),
    },
    Route {
        info: RouteInfo {
            params: RUN_ID,
            ..info(Verb::Get, "/api/runs/{id}", "getRun")
        },
        summary: "One run with every step's state",
        tag: "runs",
        query: &[],
        request: None,
        responses: &[(200, Some("Run"), "The run.")],
        mount: |r| r.to(runs::get),
    },
    Route {
        info: RouteInfo {
            params: RUN_STEP,
            ..info(
                Verb::Get,
                "/api/runs/{id}/steps/{step_id}/output",
                "getStepOutput",
            )
        },
        summary: "One step's whole output (a run's view shortens outputs over 64 KiB)",
        tag: "runs",
        query: &[],
        request: None,
        responses: &[(200, Some("StepOutput"), "The step's status and output.")],
        mount: |r| r.to(runs::step_output),
    },
    Route {
        info: RouteInfo {
            params: RUN_ID,
            ..info(Verb::Post, "/api/runs/{id}/cancel", "cancelRun")
        },
        summary: "Cancel a run (queued: at once; running: at the next step boundary)",
        tag: "runs",
        query: &[],
        request: None,
        responses: &[
            (200, Some("Run"), "The queued run is cancelled."),
            (
                202,
                Some("Run"),
                "The running run stops at its next step boundary.",
            ),
        ],
        mount: |r| r.to(runs::cancel),
    },
    Route {
        info: RouteInfo {
            auth: false,
            params: HOOK_TOKEN,
            body: true,
            ..info(Verb::Post, "/api/hooks/{token}", "inboundHook")
        },
        summary: "Inbound webhook: queue a run of the token's plan with the JSON body as ${input}",
        tag: "runs",
        query: &[],
        request: Some(("AnyJson", false)),
        responses: &[(
            202,
            Some("HookAccepted"),
            "The run is committed and queued.",
        )],
        mount: |r| r.to(runs::inbound_hook),
    },
    Route {
        info: info(Verb::Get, "/api/execution-logs", "listExecutionLogs"),
        summary: "Execution-log rows (one per step attempt), newest first",
        tag: "runs",
        query: LOG_QUERY,
        request: None,
        responses: &[(200, Some("LogPage"), "One page of log rows.")],
        mount: |r| r.to(logs::list),
    },
    // Credentials.
    Route {
        info: RouteInfo {
            params: PROVIDER,
            ..info(
                Verb::Get,
                "/api/provider-credentials/{provider}",
                "getCredentials",
            )
        },
        summary: "Whether credentials are configured for a provider (never the secret)",
        tag: "credentials",
        query: &[],
        request: None,
        responses: &[(200, Some("CredentialStatus"), "The credentials' metadata.")],
        mount: |r| r.to(credentials::get),
    },
    Route {
        info: RouteInfo {
            params: PROVIDER,
            body: true,
            ..info(
                Verb::Post,
                "/api/provider-credentials/{provider}",
                "putCredential",
            )
        },
        summary: "Store a credential, encrypted (replaces the one with the same binding)",
        tag: "credentials",
        query: &[],
        request: Some(("CredentialInput", true)),
        responses: &[(200, Some("Credential"), "The stored credential's metadata.")],
        mount: |r| r.to(credentials::put),
    },
    Route {
        info: RouteInfo {
            params: PROVIDER,
            ..info(
                Verb::Delete,
                "/api/provider-credentials/{provider}",
                "deleteCredentials",
            )
        },
        summary: "Delete the provider's credentials (or one, with ?id=)",
        tag: "credentials",
        query: CREDENTIAL_DELETE_QUERY,
        request: None,
        responses: &[(200, Some("CredentialsDeleted"), "How many were deleted.")],
        mount: |r| r.to(credentials::delete),
    },
    // Custom integrations.
    Route {
        info: info(Verb::Get, "/api/custom-integrations", "listIntegrations"),
        summary: "The caller's custom integrations",
        tag: "integrations",
        query: PAGE,
        request: None,
        responses: &[(200, Some("IntegrationPage"), "One page of integrations.")],
        mount: |r| r.to(integrations::list),
    },
    Route {
        info: RouteInfo {
            body: true,
            ..info(Verb::Post, "/api/custom-integrations", "createIntegration")
        },
        summary: "Store a custom integration",
        tag: "integrations",
        query: &[],
        request: Some(("IntegrationInput", true)),
        responses: &[(201, Some("Integration"), "The stored integration.")],
        mount: |r| r.to(integrations::create),
    },
    Route {
        info: RouteInfo {
            params: INTEGRATION_ID,
            ..info(Verb::Get, "/api/custom-integrations/{id}", "getIntegration")
        },
        summary: "One custom integration",
        tag: "integrations",
        query: &[],
        request: None,
        responses: &[(200, Some("Integration"), "The integration.")],
        mount: |r| r.to(integrations::get),
    },
    Route {
        info: RouteInfo {
            params: INTEGRATION_ID,
            body: true,
            ..info(
                Verb::Put,
                "/api/custom-integrations/{id}",
                "updateIntegration",
            )
        },
        summary: "Replace a custom integration",
        tag: "integrations",
        query: &[],
        request: Some(("IntegrationInput", true)),
        responses: &[(200, Some("Integration"), "The replaced integration.")],
        mount: |r| r.to(integrations::update),
    },
    Route {
        info: RouteInfo {
            params: INTEGRATION_ID,
            ..info(
                Verb::Delete,
                "/api/custom-integrations/{id}",
                "deleteIntegration",
            )
        },
        summary: "Delete a custom integration",
        tag: "integrations",
        query: &[],
        request: None,
        responses: &[(204, None, "Deleted.")],
        mount: |r| r.to(integrations::delete),
    },
    // Scheduler.
    Route {
        info: info(Verb::Get, "/api/scheduler/jobs", "listSchedules"),
        summary: "The caller's schedules with next run, last run and last status",
        tag: "schedules",
        query: PAGE,
        request: None,
        responses: &[(200, Some("SchedulePage"), "One page of schedules.")],
        mount: |r| r.to(schedules::jobs),
    },
    Route {
        info: info(Verb::Get, "/api/scheduler/preview", "previewSchedule"),
        summary: "The next fire times of a cron expression in a time zone",
        tag: "schedules",
        query: PREVIEW_QUERY,
        request: None,
        responses: &[(200, Some("Preview"), "The next fire times.")],
        mount: |r| r.to(schedules::preview),
    },
];

/// Every route of the API, as data.
pub fn routes() -> impl Iterator<Item = RouteInfo> {
    ROUTES.iter().map(|r| r.info)
}

/// Mounts every route of the table, answers 405 (with `Allow`) for a known path with another
/// method and 404 for an unknown path, both in the JSON error shape (`pilot_api::config` adds
/// what the handlers need besides the state).
pub(crate) fn mount(cfg: &mut web::ServiceConfig) {
    let mut paths: Vec<&'static str> = Vec::new();
    for route in ROUTES {
        if !paths.contains(&route.info.path) {
            paths.push(route.info.path);
        }
    }
    for path in paths {
        let mut resource = web::resource(path);
        let mut allowed: Vec<&'static str> = Vec::new();
        for route in ROUTES.iter().filter(|r| r.info.path == path) {
            resource = resource.route((route.mount)(web::route().method(route.info.verb.method())));
            allowed.push(route.info.verb.as_str());
        }
        resource = resource.default_service(web::to(move || {
            let allowed = allowed.clone();
            async move { Err::<actix_web::HttpResponse, _>(ApiError::method_not_allowed(&allowed)) }
        }));
        cfg.service(resource);
    }
    cfg.default_service(web::to(|| async {
        Err::<actix_web::HttpResponse, _>(ApiError::not_found())
    }));
}
