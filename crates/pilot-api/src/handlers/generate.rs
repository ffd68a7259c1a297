//! `POST /api/plans/generate`: reads and checks the request, then hands it to
//! [`crate::generate`], which asks the caller's chosen model for a plan and answers a draft
//! that is not saved (`POST /api/plans` saves it). Also the route's OpenAPI schemas, kept beside
//! the types they describe.

use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};
use pilot_cron::CronSchedule;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::extract::{Body, Caller};
use crate::generate::{self, GENERATORS, MAX_PROMPT_CHARS};
use crate::handlers::{check_line, check_text};
use crate::{ApiError, AppState};

/// The body of `POST /api/plans/generate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GenerateRequest {
    prompt: String,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    timezone: Option<String>,
}

/// `POST /api/plans/generate`
pub(crate) async fn generate(
    state: Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: Body,
) -> Result<HttpResponse, ApiError> {
    let input: GenerateRequest = body.json(&req).await?;
    if input.prompt.trim().is_empty() {
        return Err(ApiError::invalid("prompt", "must not be empty"));
    }
    check_text("prompt", &input.prompt, MAX_PROMPT_CHARS)?;
    let provider = input.provider.as_deref().unwrap_or(GENERATORS[0]);
    if !GENERATORS.contains(&provider) {
        return Err(ApiError::invalid(
            "provider",
            format!("must be one of {}", GENERATORS.join(", ")),
        ));
    }
    let installed = state
        .registry()
        .describe(provider)
        .is_some_and(|d| d.actions.iter().any(|a| a.name == "chat"));
    if !installed {
        return Err(ApiError::invalid(
            "provider",
            format!("'{provider}' is not installed on this server"),
        ));
    }
    if let Some(model) = &input.model {
        check_line("model", model, 256, true)?;
        if model.chars().any(char::is_whitespace) {
            return Err(ApiError::invalid("model", "must not contain spaces"));
        }
    }
    if let Some(timezone) = &input.timezone {
        check_line("timezone", timezone, 64, true)?;
        // The scheduler's parser knows the zone database; an expression that always parses
        // leaves the zone as the only thing checked. Only a checked zone name may reach the
        // model's instructions.
        CronSchedule::parse("0 0 * * *", timezone)
            .map_err(|e| ApiError::invalid("timezone", e.to_string()))?;
    }
    let provider = provider.to_owned();
    // The model call runs on the server's runtime, like every run's outbound I/O.
    let work = state.spawn_work({
        let state = state.clone();
        async move {
            let request = generate::Request {
                prompt: &input.prompt,
                provider: &provider,
                model: input.model.as_deref(),
                timezone: input.timezone.as_deref(),
            };
            generate::generate(&state, &caller.user, request).await
        }
    });
    let draft = work
        .await
        .map_err(|e| ApiError::internal(&format!("plan generation task failed: {e}")))??;
    Ok(HttpResponse::Ok().json(draft))
}

/// The request example, which a test deserializes into [`GenerateRequest`].
pub(crate) fn example() -> Value {
    json!({
        "prompt": "Every weekday at 8:00, summarise the orders in the input with OpenAI and keep the summary.",
        "provider": "openai",
        "timezone": "Europe/Paris",
    })
}

/// The OpenAPI component schemas of this route: `GenerateRequest` and `PlanDraft`.
pub(crate) fn schemas() -> Value {
    let schema = |name: &str| json!({ "$ref": format!("#/components/schemas/{name}") });
    let strings = json!({ "type": "array", "items": { "type": "string" } });
    json!({
        "GenerateRequest": {
            "type": "object",
            "additionalProperties": false,
            "required": ["prompt"],
            "properties": {
                "prompt": { "type": "string", "minLength": 1, "maxLength": MAX_PROMPT_CHARS, "description": "The automation, in plain words. Sent to the model as the user message only." },
                "provider": { "enum": GENERATORS, "default": GENERATORS[0], "description": "The model vendor; your own stored key for it is used." },
                "model": { "type": ["string", "null"], "minLength": 1, "maxLength": 256, "pattern": "^[^\\s]+$", "description": "The model (default: the vendor's default)." },
                "timezone": { "oneOf": [schema("TimeZone"), { "type": "null" }], "description": "Your IANA time zone: times in the prompt are read in it." },
            },
            "example": example(),
        },
        "PlanDraft": {
            "type": "object",
            "description": "A validated plan that is not saved yet: POST `plan` to /api/plans to save it.",
            "properties": {
                "plan": {
                    "type": "object",
                    "description": "A PlanInput body, as it is.",
                    "properties": {
                        "name": { "type": "string" },
                        "original_prompt": { "type": "string" },
                        "steps": { "type": "array", "items": schema("Step") },
                        "plain_english_steps": {
                            "type": "array",
                            "items": { "type": "string" },
                            "description": "One sentence per step, written by Pilot from the step and its action's description.",
                        },
                        "trigger": schema("Trigger"),
                    },
                },
                "required_providers": strings.clone(),
                "missing_credentials": { "type": "array", "items": {
                    "type": "object",
                    "properties": {
                        "provider": { "type": "string" },
                        "credential_types": strings.clone(),
                    },
                } },
                "next_fires": { "type": "array", "items": { "type": "string", "format": "date-time" }, "description": "The suggested cron trigger's next fire times." },
                "warnings": { "type": "array", "items": {
                    "type": "object",
                    "properties": { "field": { "type": "string" }, "message": { "type": "string" } },
                } },
                "provider": { "type": "string" },
                "model": { "type": ["string", "null"] },
                "attempts": { "type": "integer", "minimum": 1, "maximum": 2 },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_is_a_request() {
        let text = example().to_string();
        assert!(crate::extract::parse_json::<GenerateRequest>(text.as_bytes()).is_ok());
        assert_eq!(schemas()["GenerateRequest"]["example"], example());
    }
}
