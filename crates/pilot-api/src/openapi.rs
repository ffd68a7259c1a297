//! The OpenAPI 3.1 document, generated from the route table ([`crate::routes`]) plus the
//! component schemas written here, beside the examples that tests deserialize into the real
//! input types. Error responses are derived from each route's shape: every route may answer
//! 503; authenticated ones 401 and 429; routes with path ids 404; routes with a body 400, 413
//! and 415; routes with query parameters 400; the few that can conflict 409.

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use crate::routes::{QueryType, ROUTES, Route};

/// The document, built once.
pub(crate) fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(build)
}

fn build() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let entry = paths
            .entry(route.info.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(methods) = entry {
            methods.insert(
                route.info.verb.as_str().to_ascii_lowercase(),
                operation(route),
            );
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Pilot",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Pilot stores plans (ordered provider steps) and runs them on demand, from inbound webhooks, or on cron schedules. Errors always have the shape {\"error\": {\"code\", \"message\", \"details\"}}.",
        },
        "servers": [{ "url": "/" }],
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "description": "An API token (`pilot_...`)." }
            },
            "schemas": schemas(),
        },
    })
}

fn operation(route: &Route) -> Value {
    let mut parameters: Vec<Value> = route
        .info
        .params
        .iter()
        .map(|(name, kind)| {
            let schema = match kind {
                crate::routes::ParamKind::Provider => {
                    json!({ "type": "string", "pattern": "^[a-z][a-z0-9_]*$" })
                }
                crate::routes::ParamKind::HookToken => json!({ "type": "string" }),
                crate::routes::ParamKind::Step => {
                    json!({ "type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_-]{0,63}$" })
                }
                _ => json!({ "type": "string", "format": "uuid" }),
            };
            json!({ "name": name, "in": "path", "required": true, "schema": schema })
        })
        .collect();
    for q in route.query {
        let schema = match q.kind {
            // An empty value counts as absent, so `limit=` means the default.
            QueryType::Limit => json!({
                "anyOf": [
                    { "type": "integer", "minimum": 1, "maximum": 200 },
                    { "type": "string", "maxLength": 0 },
                ],
                "default": 50,
            }),
            QueryType::Cursor => json!({ "type": "string" }),
            // A required text parameter needs a value: an empty one counts as absent.
            QueryType::Text if q.required => json!({ "type": "string", "minLength": 1 }),
            QueryType::Text => json!({ "type": "string" }),
            QueryType::Id => json!({ "type": "string", "format": "uuid" }),
            // An empty value counts as absent (`?plan_id=&run_id=`), so the pattern allows it.
            QueryType::FilterId => json!({ "type": "string", "pattern": ID_OR_EMPTY }),
            QueryType::Integer(min, max) => {
                json!({ "type": "integer", "minimum": min, "maximum": max })
            }
            QueryType::DateTime => json!({ "type": "string", "format": "date-time" }),
            QueryType::Boolean => json!({ "enum": ["true", "false"] }),
            QueryType::Cron => cron_schema(),
            QueryType::TimeZone => reference("TimeZone"),
        };
        parameters.push(json!({
            "name": q.name,
            "in": "query",
            "required": q.required,
            "description": q.description,
            "schema": schema,
        }));
    }
    let mut responses = Map::new();
    for (status, schema, description) in route.responses {
        let mut response = json!({ "description": description });
        if let Some(schema) = schema {
            response["content"] = json!({ "application/json": { "schema": reference(schema) } });
        }
        let links = links_from(route.info.operation_id, *status);
        if !links.is_empty() {
            response["links"] = Value::Object(links);
        }
        responses.insert(status.to_string(), response);
    }
    let mut error = |status: u16, description: &str| {
        responses.entry(status.to_string()).or_insert_with(|| {
            json!({
                "description": description,
                "content": { "application/json": { "schema": reference("Error") } },
            })
        });
    };
    if route.info.body || !route.query.is_empty() || route.info.auth {
        error(
            400,
            "The request is invalid; `details.field` names the part at fault.",
        );
    }
    if route.info.auth {
        error(401, "A missing, unknown or revoked token.");
    }
    if !route.info.params.is_empty() || route.info.body {
        error(
            404,
            "No such object for the caller (another user's object looks the same).",
        );
    }
    if route.info.body {
        error(413, "The body exceeds the configured limit.");
        error(415, "The body is not JSON.");
    }
    if route.info.operation_id == "schedulePlan" {
        error(
            422,
            "The plan has no cron trigger and the body gives no cron expression.",
        );
    }
    if matches!(
        route.info.operation_id,
        "cancelRun"
            | "createIntegration"
            | "updateIntegration"
            | "deletePlan"
            | "updatePlan"
            | "execute"
            | "inboundHook"
    ) {
        error(
            409,
            "The change conflicts with the current state (a finished run, a taken name, a paused plan, a plan with runs in progress, a body naming another plan's id).",
        );
    }
    if route.info.auth || route.info.operation_id == "inboundHook" {
        error(
            429,
            "Too many requests (failed authentications from this address, your request budget, or this webhook's); see Retry-After.",
        );
    }
    error(503, "The database is unavailable; nothing was changed.");
    let mut op = json!({
        "operationId": route.info.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
        "parameters": parameters,
        "responses": responses,
    });
    if !route.info.auth {
        op["security"] = json!([]);
    }
    if let Some((schema, required)) = route.request {
        op["requestBody"] = json!({
            "required": required,
            "content": { "application/json": { "schema": reference(schema) } },
        });
    }
    op
}

/// One OpenAPI link: an answer of `from` with `status` supplies `parameters` (runtime
/// expressions) to the operation `to`. Links tell clients, and Schemathesis's stateful phase,
/// how the ids a creation returns chain into the routes that read, change or delete the object.
struct Link {
    from: &'static str,
    status: u16,
    to: &'static str,
    parameters: &'static [(&'static str, &'static str)],
}

const PLAN_ID_FROM_BODY: &[(&str, &str)] = &[("id", "$response.body#/id")];
const RUN_ID_FROM_BODY: &[(&str, &str)] = &[("id", "$response.body#/run_id")];
const FIRST_STEP_OF_RUN: &[(&str, &str)] = &[
    ("id", "$response.body#/id"),
    ("step_id", "$response.body#/steps/0/id"),
];

/// Every link of the document.
static LINKS: &[Link] = &[
    // A created plan's id reaches every plan route.
    Link {
        from: "createPlan",
        status: 201,
        to: "getPlan",
        parameters: PLAN_ID_FROM_BODY,
    },
    Link {
        from: "createPlan",
        status: 201,
        to: "updatePlan",
        parameters: PLAN_ID_FROM_BODY,
    },
    Link {
        from: "createPlan",
        status: 201,
        to: "deletePlan",
        parameters: PLAN_ID_FROM_BODY,
    },
    Link {
        from: "createPlan",
        status: 201,
        to: "createPlanHook",
        parameters: PLAN_ID_FROM_BODY,
    },
    Link {
        from: "createPlan",
        status: 201,
        to: "listPlanHooks",
        parameters: PLAN_ID_FROM_BODY,
    },
    Link {
        from: "createPlan",
        status: 201,
        to: "listPlanRuns",
        parameters: PLAN_ID_FROM_BODY,
    },
    Link {
        from: "createPlan",
        status: 201,
        to: "schedulePlan",
        parameters: PLAN_ID_FROM_BODY,
    },
    Link {
        from: "createPlan",
        status: 201,
        to: "unschedulePlan",
        parameters: PLAN_ID_FROM_BODY,
    },
    Link {
        from: "createPlan",
        status: 201,
        to: "listExecutionLogs",
        parameters: &[("plan_id", "$response.body#/id")],
    },
    Link {
        from: "updatePlan",
        status: 200,
        to: "getPlan",
        parameters: PLAN_ID_FROM_BODY,
    },
    // Webhook tokens: revoke by id, trigger by token.
    Link {
        from: "createPlanHook",
        status: 201,
        to: "deletePlanHook",
        parameters: &[
            ("id", "$request.path.id"),
            ("hook_id", "$response.body#/id"),
        ],
    },
    Link {
        from: "createPlanHook",
        status: 201,
        to: "inboundHook",
        parameters: &[("token", "$response.body#/token")],
    },
    // A step's whole output, from a run's view.
    Link {
        from: "getRun",
        status: 200,
        to: "getStepOutput",
        parameters: FIRST_STEP_OF_RUN,
    },
    // Runs, from every route that creates one.
    Link {
        from: "execute",
        status: 200,
        to: "getRun",
        parameters: PLAN_ID_FROM_BODY,
    },
    Link {
        from: "execute",
        status: 200,
        to: "cancelRun",
        parameters: PLAN_ID_FROM_BODY,
    },
    Link {
        from: "execute",
        status: 200,
        to: "listExecutionLogs",
        parameters: &[("run_id", "$response.body#/id")],
    },
    Link {
        from: "execute",
        status: 202,
        to: "getRun",
        parameters: RUN_ID_FROM_BODY,
    },
    Link {
        from: "execute",
        status: 202,
        to: "cancelRun",
        parameters: RUN_ID_FROM_BODY,
    },
    Link {
        from: "executeStep",
        status: 200,
        to: "getRun",
        parameters: RUN_ID_FROM_BODY,
    },
    Link {
        from: "executeStep",
        status: 200,
        to: "listExecutionLogs",
        parameters: &[("run_id", "$response.body#/run_id")],
    },
    Link {
        from: "inboundHook",
        status: 202,
        to: "getRun",
        parameters: RUN_ID_FROM_BODY,
    },
    Link {
        from: "inboundHook",
        status: 202,
        to: "cancelRun",
        parameters: RUN_ID_FROM_BODY,
    },
    Link {
        from: "cancelRun",
        status: 200,
        to: "getRun",
        parameters: PLAN_ID_FROM_BODY,
    },
    // Custom integrations.
    Link {
        from: "createIntegration",
        status: 201,
        to: "getIntegration",
        parameters: PLAN_ID_FROM_BODY,
    },
    Link {
        from: "createIntegration",
        status: 201,
        to: "updateIntegration",
        parameters: PLAN_ID_FROM_BODY,
    },
    Link {
        from: "createIntegration",
        status: 201,
        to: "deleteIntegration",
        parameters: PLAN_ID_FROM_BODY,
    },
    // Credentials: the provider of the path, and one credential's id.
    Link {
        from: "putCredential",
        status: 200,
        to: "getCredentials",
        parameters: &[("provider", "$request.path.provider")],
    },
    Link {
        from: "putCredential",
        status: 200,
        to: "deleteCredentials",
        parameters: &[
            ("provider", "$request.path.provider"),
            ("id", "$response.body#/id"),
        ],
    },
];

/// The `links` object of one response.
fn links_from(operation_id: &str, status: u16) -> Map<String, Value> {
    let mut out = Map::new();
    for link in LINKS
        .iter()
        .filter(|l| l.from == operation_id && l.status == status)
    {
        let parameters: Map<String, Value> = link
            .parameters
            .iter()
            .map(|(name, expr)| ((*name).to_owned(), Value::String((*expr).to_owned())))
            .collect();
        out.insert(
            link.to.to_owned(),
            json!({ "operationId": link.to, "parameters": parameters }),
        );
    }
    out
}

/// A UUID (any case, as `is_id` reads it) or nothing.
const ID_OR_EMPTY: &str =
    "^([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})?$";

/// An RFC 9110 header name as `check_header_name` accepts it.
const HEADER_NAME: &str = "^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$";

/// The shape of a crontab expression: 5 fields (or 6, seconds first) of numbers, names, `*`,
/// `?`, ranges, steps and lists, or one of the `@` macros. Values out of a field's range still
/// get 400 naming the field; the pattern keeps generated examples to well-formed ones.
const CRON_PATTERN: &str = "^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|[0-9A-Za-z*?/,-]+( [0-9A-Za-z*?/,-]+){4,5})$";

fn cron_schema() -> Value {
    json!({ "type": "string", "minLength": 1, "maxLength": pilot_cron::CRON_MAX_LEN, "pattern": CRON_PATTERN })
}

fn nullable_timezone() -> Value {
    json!({ "oneOf": [reference("TimeZone"), { "type": "null" }] })
}

/// The characters a header value (and so a secret sent in one) may hold: no control characters.
const HEADER_VALUE: &str = "^[^\\u0000-\\u001f\\u007f]*$";

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn page_of(item: &str) -> Value {
    json!({
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": { "type": "array", "items": reference(item) },
            "next_cursor": { "type": ["string", "null"], "description": "Pass as `cursor` for the next page; null on the last page." },
        },
    })
}

const TIME: &str = "date-time";

fn time() -> Value {
    json!({ "type": "string", "format": TIME })
}

fn nullable_time() -> Value {
    json!({ "type": ["string", "null"], "format": TIME })
}

fn nullable_string() -> Value {
    json!({ "type": ["string", "null"] })
}

/// The request examples, by schema name: the tests deserialize each into its input type.
pub(crate) fn examples() -> Vec<(&'static str, Value)> {
    vec![
        (
            "PlanInput",
            json!({
                "name": "Notify on new order",
                "steps": [
                    { "id": "shape", "provider": "logic", "action": "transform", "params": { "expression": ".order", "input": "${input}" } },
                    { "id": "notify", "provider": "webhook", "action": "post", "params": { "url": "https://hooks.example.com/orders", "body": "${steps.shape.output}" } }
                ],
                "trigger": { "type": "cron", "cron": "0 9 * * 1-5", "timezone": "Europe/Paris" }
            }),
        ),
        (
            "ExecuteRequest",
            json!({ "plan_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "input": { "order": 42 }, "async": true }),
        ),
        (
            "ExecuteStepRequest",
            json!({ "provider": "webhook", "action": "post", "params": { "url": "https://hooks.example.com/x", "body": { "hello": "world" } } }),
        ),
        (
            "CredentialInput",
            json!({ "type": "bearer", "value": "s3cr3t", "integration": "crm" }),
        ),
        (
            "IntegrationInput",
            json!({ "name": "crm", "base_url": "https://api.crm.example.com/v2", "auth_scheme": "bearer", "default_headers": { "Accept": "application/json" } }),
        ),
        (
            "ScheduleInput",
            json!({ "cron": "*/15 * * * *", "timezone": "UTC", "misfire_policy": "skip", "overlap_policy": "skip" }),
        ),
    ]
}

fn example(name: &str) -> Value {
    examples()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .unwrap_or(Value::Null)
}

fn step_schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["id", "provider", "action"],
        "properties": {
            "id": { "type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_-]{0,63}$" },
            "provider": { "type": "string" },
            "action": { "type": "string" },
            "params": { "type": "object", "description": "The action's params; strings may hold ${...} references." },
            "retry": reference("RetryPolicy"),
            "timeout_ms": { "type": "integer", "minimum": 1, "maximum": 3_600_000 },
            "when": { "type": "string", "description": "A jq expression; the step runs when it yields neither false nor null." },
            "continue_on_error": { "type": "boolean" },
        },
    })
}

fn schemas() -> Value {
    let credential_kind = json!({ "type": "string", "enum": ["api_key", "bearer", "basic", "header", "oauth_token"] });
    let run_status = json!({ "type": "string", "enum": ["queued", "running", "succeeded", "failed", "cancelled"] });
    let mut all = Map::new();
    let part_0 = json!({
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message", "details"],
                    "properties": {
                        "code": { "type": "string" },
                        "message": { "type": "string" },
                        "details": { "description": "An object (whose `field` names the part of the request at fault) or null." },
                    },
                },
            },
        },
        "Health": { "type": "object", "properties": { "status": { "const": "ok" }, "version": { "type": "string" } } },
        "Ready": { "type": "object", "properties": { "status": { "const": "ready" }, "database": { "enum": ["sqlite", "postgres"] } } },
        "AnyJson": { "description": "Any JSON document; it becomes the run's ${input}." },
        "TimeZone": {
            "type": "string",
            "description": "An IANA time zone name.",
            "enum": pilot_cron::timezone_names().collect::<Vec<_>>(),
        },
        "ProviderList": {
            "type": "object",
            "properties": { "providers": { "type": "array", "items": reference("Provider") } },
        },
        "Provider": {
            "type": "object",
            "properties": {
                "name": { "type": "string" },
                "description": { "type": "string" },
                "credential_types": { "type": "array", "items": credential_kind },
                "actions": { "type": "array", "items": {
                    "type": "object",
                    "properties": {
                        "name": { "type": "string" },
                        "description": { "type": "string" },
                        "params": { "type": "array", "items": {
                            "type": "object",
                            "properties": {
                                "name": { "type": "string" },
                                "type": { "type": "string" },
                                "required": { "type": "boolean" },
                                "description": { "type": "string" },
                                "format": { "enum": ["jq", "url"], "description": "Checked when the plan is saved, for a literal value: a jq expression that compiles, or a URL the outbound guard accepts." },
                            },
                        } },
                        "one_of": { "type": "array", "items": { "type": "array", "items": { "type": "string" } } },
                    },
                } },
            },
        },
    });
    let part_1 = json!({
        "Step": step_schema(),
        "RetryPolicy": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "max_attempts": { "type": "integer", "minimum": 1, "maximum": 10 },
                "base_ms": { "type": "integer", "minimum": 0 },
                "factor": { "type": "number", "minimum": 1 },
                "cap_ms": { "type": "integer", "minimum": 0, "maximum": 3_600_000 },
                "jitter": { "type": "boolean" },
            },
        },
        "Trigger": {
            "oneOf": [
                { "type": "object", "additionalProperties": false, "required": ["type"], "properties": { "type": { "const": "manual" } } },
                { "type": "object", "additionalProperties": false, "required": ["type"], "properties": { "type": { "const": "webhook" } } },
                { "type": "object", "additionalProperties": false, "required": ["type", "cron"], "properties": {
                    "type": { "const": "cron" }, "cron": cron_schema(), "timezone": nullable_timezone(),
                } },
            ],
        },
        "PlanInput": {
            "type": "object",
            "additionalProperties": false,
            "required": ["name", "steps"],
            "properties": {
                "name": { "type": "string", "minLength": 1, "maxLength": 200 },
                "original_prompt": { "type": ["string", "null"] },
                "steps": { "type": "array", "minItems": 1, "maxItems": 200, "items": reference("Step") },
                "plain_english_steps": { "type": ["array", "null"], "items": { "type": "string" } },
                "trigger": { "oneOf": [reference("Trigger"), { "type": "null" }] },
                "status": { "enum": ["active", "paused", "draft", null] },
                "id": { "type": ["string", "null"], "description": "Ignored on create; on replace it must be the plan's own id (409 otherwise). Accepted so that a plan read with GET can be sent back as it is." },
                "required_providers": { "description": "Server-owned, ignored." },
                "next_fires": { "description": "Server-owned, ignored." },
                "created_at": { "description": "Server-owned, ignored." },
                "updated_at": { "description": "Server-owned, ignored." },
            },
            "example": example("PlanInput"),
        },
        "Plan": {
            "type": "object",
            "properties": {
                "id": { "type": "string", "format": "uuid" },
                "name": { "type": "string" },
                "original_prompt": nullable_string(),
                "steps": { "type": "array", "items": reference("Step") },
                "plain_english_steps": { "type": "array", "items": { "type": "string" } },
                "required_providers": { "type": "array", "items": { "type": "string" } },
                "trigger": { "oneOf": [reference("Trigger"), { "type": "null" }] },
                "next_fires": { "type": "array", "items": { "type": "string", "format": "date-time" }, "description": "With a cron trigger, its next 5 fire times in its zone; empty otherwise and while the plan is paused." },
                "status": { "type": "string" },
                "created_at": time(),
                "updated_at": time(),
                "webhook": reference("HookIssued"),
            },
        },
        "PlanPage": page_of("Plan"),
    });
    let part_2 = json!({
        "HookIssued": {
            "type": "object",
            "properties": {
                "id": { "type": "string", "format": "uuid" },
                "token": { "type": "string", "description": "Shown once; POST JSON to `path` to start the plan." },
                "path": { "type": "string" },
                "created_at": time(),
            },
        },
        "Hook": {
            "type": "object",
            "properties": { "id": { "type": "string", "format": "uuid" }, "plan_id": { "type": "string", "format": "uuid" }, "created_at": time() },
        },
        "StepOutput": {
            "type": "object",
            "properties": {
                "run_id": { "type": "string", "format": "uuid" },
                "step_id": { "type": "string" },
                "status": { "enum": ["pending", "succeeded", "failed", "skipped"] },
                "output": { "description": "The step's whole output (redacted), or null before it has one." },
            },
        },
        "HookPage": page_of("Hook"),
        "HookAccepted": {
            "type": "object",
            "properties": { "run_id": { "type": "string", "format": "uuid" }, "status": run_status },
        },
        "ExecuteRequest": {
            "type": "object",
            "additionalProperties": false,
            "description": "Give exactly one of plan_id and plan.",
            "oneOf": [
                { "required": ["plan_id"], "not": { "required": ["plan"] } },
                { "required": ["plan"], "not": { "required": ["plan_id"] } },
            ],
            "properties": {
                "plan_id": { "type": "string", "format": "uuid" },
                "plan": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["name", "steps"],
                    "properties": {
                        "name": { "type": "string", "minLength": 1, "maxLength": 200 },
                        "steps": { "type": "array", "minItems": 1, "maxItems": 200, "items": reference("Step") },
                    },
                },
                "input": { "description": "The run's ${input}." },
                "async": { "type": "boolean", "default": false },
            },
            "example": example("ExecuteRequest"),
        },
        "ExecuteStepRequest": {
            "type": "object",
            "additionalProperties": false,
            "required": ["provider", "action"],
            "properties": {
                "id": { "type": ["string", "null"], "pattern": "^[A-Za-z][A-Za-z0-9_-]{0,63}$" },
                "provider": { "type": "string" },
                "action": { "type": "string" },
                "params": { "type": "object" },
                "retry": { "oneOf": [reference("RetryPolicy"), { "type": "null" }] },
                "timeout_ms": { "type": ["integer", "null"], "minimum": 1, "maximum": 3_600_000 },
                "input": {},
            },
            "example": example("ExecuteStepRequest"),
        },
    });
    let part_3 = json!({
        "StepResult": {
            "type": "object",
            "properties": {
                "run_id": { "type": "string", "format": "uuid" },
                "success": { "type": "boolean" },
                "output": {},
                "message": nullable_string(),
                "metadata": {},
                "error": nullable_string(),
            },
        },
        "StepOutcome": {
            "type": "object",
            "properties": {
                "id": { "type": "string" },
                "provider": { "type": "string" },
                "action": { "type": "string" },
                "status": { "enum": ["pending", "succeeded", "failed", "skipped"] },
                "output": { "description": "The step's output; null (with `output_truncated`) when it is over 64 KiB: read it whole from /api/runs/{id}/steps/{step_id}/output." },
                "output_truncated": { "type": "boolean", "description": "Present (true) when `output` was left out for its size." },
                "output_bytes": { "type": "integer", "description": "With `output_truncated`: the output's size as compact JSON." },
                "error": nullable_string(),
                "attempts": { "type": "integer" },
                "latency_ms": { "type": "integer" },
                "started_at": nullable_time(),
                "finished_at": nullable_time(),
            },
        },
        "Run": {
            "type": "object",
            "properties": {
                "id": { "type": "string", "format": "uuid" },
                "plan_id": { "type": ["string", "null"], "format": "uuid" },
                "plan_name": { "type": "string" },
                "status": run_status,
                "trigger": { "enum": ["api", "schedule", "webhook", "step"] },
                "input": {},
                "error": nullable_string(),
                "cancel_requested": { "type": "boolean" },
                "scheduled_for": nullable_time(),
                "takeover_count": { "type": "integer" },
                "created_at": time(),
                "started_at": nullable_time(),
                "finished_at": nullable_time(),
                "steps": { "type": "array", "items": reference("StepOutcome") },
            },
        },
        "RunAccepted": {
            "type": "object",
            "properties": { "run_id": { "type": "string", "format": "uuid" }, "status": run_status, "run": reference("Run") },
        },
        "RunPage": page_of("Run"),
    });
    let part_4 = json!({
        "LogEntry": {
            "type": "object",
            "properties": {
                "id": { "type": "string" },
                "plan_id": { "type": ["string", "null"] },
                "run_id": { "type": "string" },
                "plan_name": { "type": "string" },
                "step_number": { "type": "integer" },
                "step_id": { "type": "string" },
                "provider": { "type": "string" },
                "action": { "type": "string" },
                "attempt": { "type": "integer" },
                "status": { "enum": ["succeeded", "failed", "retrying", "skipped"] },
                "message": nullable_string(),
                "latency_ms": { "type": "integer" },
                "output_preview": nullable_string(),
                "error": nullable_string(),
                "timestamp": time(),
            },
        },
        "LogPage": page_of("LogEntry"),
        "CredentialInput": {
            "type": "object",
            "additionalProperties": false,
            "required": ["type", "value"],
            "properties": {
                "type": credential_kind,
                "value": {
                    "type": "string",
                    "minLength": pilot_core::redact::MIN_SECRET_LEN,
                    "maxLength": crate::handlers::credentials::MAX_SECRET_BYTES,
                    "pattern": HEADER_VALUE,
                    "writeOnly": true,
                    "description": "The secret. A basic credential's password (after ':') is as long at least.",
                },
                "origin": { "type": ["string", "null"], "description": "custom_api: the origin the credential may be sent to." },
                "integration": { "type": ["string", "null"], "description": "custom_api: the integration it belongs to." },
                "header_name": { "type": ["string", "null"], "pattern": HEADER_NAME },
                "expires_at": nullable_time(),
            },
            "example": example("CredentialInput"),
        },
        "Credential": {
            "type": "object",
            "description": "A stored credential's metadata; the secret is never returned.",
            "properties": {
                "id": { "type": "string", "format": "uuid" },
                "type": credential_kind,
                "origin": nullable_string(),
                "integration": nullable_string(),
                "header_name": nullable_string(),
                "expires_at": nullable_time(),
                "created_at": time(),
                "updated_at": time(),
            },
        },
    });
    let part_5 = json!({
        "CredentialStatus": {
            "type": "object",
            "properties": {
                "provider": { "type": "string" },
                "configured": { "type": "boolean" },
                "credentials": { "type": "array", "items": reference("Credential") },
            },
        },
        "CredentialsDeleted": {
            "type": "object",
            "properties": { "provider": { "type": "string" }, "deleted": { "type": "integer" } },
        },
        "IntegrationInput": {
            "type": "object",
            "additionalProperties": false,
            "required": ["name", "base_url"],
            "properties": {
                "name": { "type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$" },
                "base_url": {
                    "type": "string",
                    "format": "uri",
                    "pattern": "^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%!$&'()*+,;=:@/-]*)?$",
                    "description": "http or https, no credentials in it; a destination the outbound guard blocks is refused.",
                },
                "auth_scheme": { "oneOf": [credential_kind.clone(), { "type": "null" }] },
                "auth_header": { "type": ["string", "null"], "pattern": HEADER_NAME, "description": "With the api_key and header schemes only." },
                "default_headers": {
                    "type": "object",
                    "maxProperties": crate::handlers::integrations::MAX_HEADERS,
                    "propertyNames": { "pattern": HEADER_NAME },
                    "additionalProperties": { "type": "string", "maxLength": 4096, "pattern": HEADER_VALUE },
                },
            },
            "if": { "required": ["auth_header"], "properties": { "auth_header": { "type": "string" } } },
            "then": { "required": ["auth_scheme"], "properties": { "auth_scheme": { "enum": ["api_key", "header"] } } },
            "example": example("IntegrationInput"),
        },
        "Integration": {
            "type": "object",
            "properties": {
                "id": { "type": "string", "format": "uuid" },
                "name": { "type": "string" },
                "base_url": { "type": "string" },
                "auth_scheme": { "oneOf": [credential_kind, { "type": "null" }] },
                "auth_header": nullable_string(),
                "default_headers": { "type": "object", "additionalProperties": { "type": "string" } },
                "created_at": time(),
                "updated_at": time(),
            },
        },
    });
    let part_6 = json!({
        "IntegrationPage": page_of("Integration"),
        "ScheduleInput": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "cron": { "oneOf": [cron_schema(), { "type": "null" }] },
                "timezone": nullable_timezone(),
                "misfire_policy": { "enum": ["skip", "coalesce", null] },
                "grace_seconds": { "type": ["integer", "null"], "minimum": 0, "maximum": 604_800 },
                "overlap_policy": { "enum": ["allow", "skip", null] },
                "enabled": { "type": ["boolean", "null"] },
            },
            "example": example("ScheduleInput"),
        },
        "Schedule": {
            "type": "object",
            "properties": {
                "id": { "type": "string", "format": "uuid" },
                "plan_id": { "type": "string", "format": "uuid" },
                "plan_name": { "type": "string" },
                "cron": { "type": "string" },
                "timezone": { "type": "string" },
                "misfire_policy": { "enum": ["skip", "coalesce"] },
                "grace_seconds": { "type": "integer" },
                "overlap_policy": { "enum": ["allow", "skip"] },
                "enabled": { "type": "boolean" },
                "next_run_at": nullable_time(),
                "last_run_at": nullable_time(),
                "last_run_id": nullable_string(),
                "last_status": { "oneOf": [run_status, { "type": "null" }] },
                "plan_status": { "enum": ["active", "paused", "draft"], "description": "In the jobs list: the plan's status; a paused plan's ticks pass without runs." },
                "missed_paused": { "type": "integer", "minimum": 0, "description": "In the jobs list: ticks skipped because the plan was paused." },
                "created_at": time(),
                "updated_at": time(),
            },
        },
        "PlanValidation": {
            "type": "object",
            "required": ["valid", "errors", "required_providers"],
            "properties": {
                "valid": { "type": "boolean" },
                "errors": { "type": "array", "items": {
                    "type": "object",
                    "properties": {
                        "step": { "type": ["string", "null"] },
                        "field": { "type": ["string", "null"] },
                        "message": { "type": "string" },
                    },
                } },
                "required_providers": { "type": "array", "items": { "type": "string" } },
            },
        },
        "SchedulePage": page_of("Schedule"),
        "Unscheduled": {
            "type": "object",
            "properties": { "plan_id": { "type": "string", "format": "uuid" }, "unscheduled": { "type": "boolean" } },
        },
        "Preview": {
            "type": "object",
            "properties": {
                "cron": { "type": "string" },
                "timezone": { "type": "string" },
                "wall_clock": { "type": "boolean" },
                "after": time(),
                "fires": { "type": "array", "items": time() },
            },
        },
    });
    for part in [
        part_0,
        part_1,
        part_2,
        part_3,
        part_4,
        part_5,
        part_6,
        crate::handlers::generate::schemas(),
    ] {
        if let Value::Object(map) = part {
            all.extend(map);
        }
    }
    Value::Object(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::{credentials, integrations, plans, runs, schedules};

    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r.clone());
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    /// The document committed as docs/openapi.json is the one this build serves, so a route or
    /// type change that changes the document changes the committed file in the same commit.
    /// `cargo xtask codegen` rewrites it (it runs this test with `PILOT_WRITE_OPENAPI=1`).
    #[test]
    #[allow(
        clippy::disallowed_methods,
        reason = "the codegen switch of this one test"
    )]
    fn the_committed_document_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let mut generated = serde_json::to_string_pretty(document()).unwrap();
        generated.push('\n');
        if std::env::var("PILOT_WRITE_OPENAPI").is_ok_and(|v| v == "1") {
            std::fs::write(path, &generated).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json is not the document this build serves: run `cargo xtask codegen` \
             and commit the result"
        );
    }

    #[test]
    fn every_route_is_documented_once_with_its_method() {
        let doc = document();
        for route in ROUTES {
            let op = &doc["paths"][route.info.path][route.info.verb.as_str().to_ascii_lowercase()];
            assert_eq!(
                op["operationId"],
                route.info.operation_id,
                "{} {}",
                route.info.verb.as_str(),
                route.info.path
            );
        }
        let documented: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|m| m.as_object().unwrap().len())
            .sum();
        assert_eq!(documented, ROUTES.len());
        let mut ids: Vec<_> = ROUTES.iter().map(|r| r.info.operation_id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), ROUTES.len(), "operation ids must be unique");
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let mut found = Vec::new();
        refs(doc, &mut found);
        assert!(!found.is_empty());
        for r in found {
            let name = r.strip_prefix("#/components/schemas/").unwrap();
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "dangling {r}"
            );
        }
    }

    #[test]
    fn every_link_names_real_operations_and_parameters() {
        for link in LINKS {
            let from = ROUTES.iter().find(|r| r.info.operation_id == link.from);
            let to = ROUTES.iter().find(|r| r.info.operation_id == link.to);
            let (Some(from), Some(to)) = (from, to) else {
                panic!("link {} -> {}: unknown operation", link.from, link.to);
            };
            assert!(
                from.responses.iter().any(|(s, _, _)| *s == link.status),
                "{} does not answer {}",
                link.from,
                link.status
            );
            for (name, expr) in link.parameters {
                let declared = to.info.params.iter().any(|(p, _)| p == name)
                    || to.query.iter().any(|q| q.name == *name);
                assert!(declared, "{} takes no parameter {name}", link.to);
                if let Some(path_name) = expr.strip_prefix("$request.path.") {
                    assert!(
                        from.info.params.iter().any(|(p, _)| *p == path_name),
                        "{} has no path parameter {path_name}",
                        link.from
                    );
                }
            }
        }
        // Every route with an object id in its path is reachable from a link (a provider name
        // is a catalogue entry, not an object a call creates).
        for route in ROUTES.iter().filter(|r| {
            r.info
                .params
                .iter()
                .any(|(_, kind)| *kind != crate::routes::ParamKind::Provider)
        }) {
            assert!(
                LINKS.iter().any(|l| l.to == route.info.operation_id),
                "no link reaches {}",
                route.info.operation_id
            );
        }
        let doc = document();
        let links = &doc["paths"]["/api/plans"]["post"]["responses"]["201"]["links"];
        assert_eq!(links["getPlan"]["parameters"]["id"], "$response.body#/id");
    }

    #[test]
    fn every_path_parameter_is_declared() {
        for route in ROUTES {
            let declared: Vec<&str> = route.info.params.iter().map(|(n, _)| *n).collect();
            let in_path: Vec<&str> = route
                .info
                .path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .collect();
            assert_eq!(declared, in_path, "{}", route.info.path);
        }
    }

    #[test]
    fn request_examples_deserialize_into_the_handlers_input_types() {
        for (name, value) in examples() {
            let text = value.to_string();
            let bytes = text.as_bytes();
            let ok = match name {
                "PlanInput" => crate::extract::parse_json::<plans::PlanInput>(bytes).map(drop),
                "ExecuteRequest" => {
                    crate::extract::parse_json::<runs::ExecuteRequest>(bytes).map(drop)
                }
                "ExecuteStepRequest" => {
                    crate::extract::parse_json::<runs::ExecuteStepRequest>(bytes).map(drop)
                }
                "CredentialInput" => {
                    crate::extract::parse_json::<credentials::CredentialInput>(bytes).map(drop)
                }
                "IntegrationInput" => {
                    crate::extract::parse_json::<integrations::IntegrationInput>(bytes).map(drop)
                }
                "ScheduleInput" => {
                    crate::extract::parse_json::<schedules::ScheduleInput>(bytes).map(drop)
                }
                other => panic!("no input type for example {other}"),
            };
            assert!(ok.is_ok(), "{name}: {:?}", ok.err());
        }
    }
}
