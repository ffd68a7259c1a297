//! The `chat` action's params, checked strictly before anything is sent: an unknown param, a
//! wrong type or an out-of-range value is a permanent error that names the param, so a plan
//! is fixed once instead of paying for a request the vendor would refuse.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::AiError;

/// Every param `chat` accepts, as `GET /api/providers` lists them: name, JSON type, one
/// sentence (the model's default is added per vendor).
pub(crate) const PARAMS: [(&str, &str, &str); 8] = [
    ("model", "string", "The model; default"),
    ("prompt", "string", "The user's message (or give messages)."),
    (
        "messages",
        "array",
        "The conversation: [{\"role\": \"system\"|\"user\"|\"assistant\", \"content\": \"...\"}].",
    ),
    (
        "system",
        "string",
        "A system message placed before the others.",
    ),
    ("temperature", "number", "Sampling temperature, 0 to 2."),
    (
        "max_tokens",
        "integer",
        "The most tokens the answer may have.",
    ),
    ("stop", "any", "A stop sequence, or an array of up to 4."),
    (
        "json",
        "boolean",
        "Ask for a JSON object (the prompt must mention JSON); the output is then the parsed value.",
    ),
];

/// The most stop sequences the protocol accepts.
const MAX_STOP: usize = 4;

/// The longest model name accepted.
const MAX_MODEL_LEN: usize = 256;

/// Validated params, borrowing the step's JSON.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChatParams<'a> {
    /// The model asked for, or the vendor's default.
    pub(crate) model: &'a str,
    /// The conversation, `system` first when given.
    pub(crate) messages: Vec<Message<'a>>,
    /// Sampling temperature, 0 to 2.
    pub(crate) temperature: Option<f64>,
    /// Most tokens the answer may have.
    pub(crate) max_tokens: Option<u64>,
    /// Where the model stops.
    pub(crate) stop: Option<Stop<'a>>,
    /// Whether the answer must be a JSON object, returned parsed.
    pub(crate) json: bool,
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Message<'a> {
    /// `system`, `user` or `assistant`.
    pub(crate) role: &'a str,
    /// The text.
    pub(crate) content: &'a str,
}

/// One stop sequence or several, sent as the step gave them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub(crate) enum Stop<'a> {
    /// A single sequence.
    One(&'a str),
    /// Up to four sequences.
    Many(Vec<&'a str>),
}

/// Checks `params` and builds the request's content; `default_model` is used when no model
/// is named.
pub(crate) fn parse<'a>(
    params: &'a Value,
    default_model: &'a str,
) -> Result<ChatParams<'a>, AiError> {
    let Some(params) = params.as_object() else {
        return Err(invalid("params", "must be an object"));
    };
    if let Some(unknown) = params
        .keys()
        .find(|k| !PARAMS.iter().any(|(name, ..)| name == k))
    {
        let names: Vec<_> = PARAMS.iter().map(|(name, ..)| *name).collect();
        return Err(invalid(
            &shorten(unknown),
            &format!("is not a param of chat (it takes: {})", names.join(", ")),
        ));
    }

    let model = match string(params, "model")? {
        Some(model) => check_model(model)?,
        None => default_model,
    };
    let system = string(params, "system")?;
    let prompt = string(params, "prompt")?;
    let listed = get(params, "messages");

    let mut messages = Vec::new();
    if let Some(system) = system {
        messages.push(Message {
            role: "system",
            content: system,
        });
    }
    match (prompt, listed) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "prompt",
                "cannot be given together with 'messages': give one of them",
            ));
        }
        (None, None) => {
            return Err(invalid(
                "prompt",
                "is missing: give 'prompt' (a string) or 'messages' (an array)",
            ));
        }
        (Some(prompt), None) => {
            if prompt.trim().is_empty() {
                return Err(invalid("prompt", "must not be empty"));
            }
            messages.push(Message {
                role: "user",
                content: prompt,
            });
        }
        (None, Some(listed)) => parse_messages(listed, &mut messages)?,
    }

    Ok(ChatParams {
        model,
        messages,
        temperature: temperature(params)?,
        max_tokens: max_tokens(params)?,
        stop: stop(params)?,
        json: match get(params, "json") {
            None => false,
            Some(Value::Bool(json)) => *json,
            Some(_) => return Err(invalid("json", "must be true or false")),
        },
    })
}

/// A param's value; an explicit `null` counts as absent.
fn get<'a>(params: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    params.get(name).filter(|v| !v.is_null())
}

fn string<'a>(params: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, AiError> {
    match get(params, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(invalid(
            name,
            &format!("must be a string, not {}", type_name(other)),
        )),
    }
}

fn check_model(model: &str) -> Result<&str, AiError> {
    if model.is_empty() {
        return Err(invalid("model", "must not be empty"));
    }
    if model.len() > MAX_MODEL_LEN {
        return Err(invalid(
            "model",
            &format!("must be at most {MAX_MODEL_LEN} bytes"),
        ));
    }
    if model.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "model",
            "must not contain spaces or control characters",
        ));
    }
    Ok(model)
}

fn parse_messages<'a>(listed: &'a Value, messages: &mut Vec<Message<'a>>) -> Result<(), AiError> {
    let Value::Array(listed) = listed else {
        return Err(invalid(
            "messages",
            &format!("must be an array, not {}", type_name(listed)),
        ));
    };
    if listed.is_empty() {
        return Err(invalid("messages", "must not be empty"));
    }
    for (i, message) in listed.iter().enumerate() {
        let Value::Object(message) = message else {
            return Err(invalid(
                &format!("messages[{i}]"),
                "must be an object {\"role\": ..., \"content\": ...}",
            ));
        };
        if let Some(unknown) = message.keys().find(|k| *k != "role" && *k != "content") {
            return Err(invalid(
                &format!("messages[{i}].{}", shorten(unknown)),
                "is not allowed (a message has only 'role' and 'content')",
            ));
        }
        let role = match message.get("role") {
            Some(Value::String(role))
                if ["system", "user", "assistant"].contains(&role.as_str()) =>
            {
                role
            }
            _ => {
                return Err(invalid(
                    &format!("messages[{i}].role"),
                    "must be \"system\", \"user\" or \"assistant\"",
                ));
            }
        };
        let content = match message.get("content") {
            Some(Value::String(content)) => content,
            Some(other) => {
                return Err(invalid(
                    &format!("messages[{i}].content"),
                    &format!("must be a string, not {}", type_name(other)),
                ));
            }
            None => return Err(invalid(&format!("messages[{i}].content"), "is missing")),
        };
        messages.push(Message { role, content });
    }
    Ok(())
}

fn temperature(params: &Map<String, Value>) -> Result<Option<f64>, AiError> {
    let Some(value) = get(params, "temperature") else {
        return Ok(None);
    };
    match value.as_f64() {
        Some(t) if (0.0..=2.0).contains(&t) => Ok(Some(t)),
        Some(_) => Err(invalid(
            "temperature",
            &format!("must be from 0 to 2, not {value}"),
        )),
        None => Err(invalid(
            "temperature",
            &format!("must be a number, not {}", type_name(value)),
        )),
    }
}

fn max_tokens(params: &Map<String, Value>) -> Result<Option<u64>, AiError> {
    let Some(value) = get(params, "max_tokens") else {
        return Ok(None);
    };
    match value.as_u64() {
        Some(n) if n >= 1 && n <= u64::from(u32::MAX) => Ok(Some(n)),
        _ => Err(invalid("max_tokens", "must be a positive integer")),
    }
}

fn stop(params: &Map<String, Value>) -> Result<Option<Stop<'_>>, AiError> {
    let non_empty = "must be a non-empty string or an array of 1 to 4 non-empty strings";
    match get(params, "stop") {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(Stop::One(s))),
        Some(Value::Array(items)) if (1..=MAX_STOP).contains(&items.len()) => {
            let mut stops = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(s) if !s.is_empty() => stops.push(s.as_str()),
                    _ => return Err(invalid("stop", non_empty)),
                }
            }
            Ok(Some(Stop::Many(stops)))
        }
        Some(_) => Err(invalid("stop", non_empty)),
    }
}

fn invalid(param: &str, reason: &str) -> AiError {
    AiError::InvalidParam {
        param: param.to_owned(),
        reason: reason.to_owned(),
    }
}

/// A user-given key, cut so an error message stays short.
pub(crate) fn shorten(key: &str) -> String {
    match key.char_indices().nth(64) {
        Some((end, _)) => format!("{}...", &key[..end]),
        None => key.to_owned(),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::protocol::request_body;

    /// Parses `params` with default model `dflt` and compares the request body it gives, or
    /// the error message.
    fn check(params: Value, expect: Result<Value, &str>) {
        let got = parse(&params, "dflt")
            .map(|p| serde_json::from_slice::<Value>(&request_body(&p).unwrap()).unwrap());
        match (got, expect) {
            (Ok(body), Ok(want)) => assert_eq!(body, want, "{params}"),
            (Err(e), Err(want)) => assert_eq!(e.to_string(), want, "{params}"),
            (got, want) => panic!("{params}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn valid_params_build_the_request_body() {
        check(
            json!({"prompt": "hi"}),
            Ok(json!({"model": "dflt", "messages": [{"role": "user", "content": "hi"}]})),
        );
        check(
            json!({"prompt": "hi", "model": "m-1", "system": "be brief", "temperature": 0.5, "max_tokens": 10, "stop": "\n", "json": true}),
            Ok(json!({
                "model": "m-1",
                "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
                "temperature": 0.5, "max_tokens": 10, "stop": "\n", "response_format": {"type": "json_object"},
            })),
        );
        check(
            json!({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}, {"role": "user", "content": "b"}], "system": "s", "stop": ["x", "y"], "json": false}),
            Ok(json!({
                "model": "dflt",
                "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": ""}, {"role": "user", "content": "b"}],
                "stop": ["x", "y"],
            })),
        );
        check(
            json!({"prompt": "hi", "model": null, "temperature": null, "stop": null, "messages": null}),
            Ok(json!({"model": "dflt", "messages": [{"role": "user", "content": "hi"}]})),
        );
        check(
            json!({"prompt": "hi", "temperature": 0}),
            Ok(
                json!({"model": "dflt", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.0}),
            ),
        );
        check(
            json!({"prompt": "hi", "temperature": 2}),
            Ok(
                json!({"model": "dflt", "messages": [{"role": "user", "content": "hi"}], "temperature": 2.0}),
            ),
        );
        check(
            json!({"prompt": "hi", "max_tokens": 1}),
            Ok(
                json!({"model": "dflt", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}),
            ),
        );
    }

    #[test]
    fn invalid_params_are_named() {
        let cases = [
            (json!("hi"), "param 'params' must be an object"),
            (json!(null), "param 'params' must be an object"),
            (
                json!({}),
                "param 'prompt' is missing: give 'prompt' (a string) or 'messages' (an array)",
            ),
            (
                json!({"system": "s"}),
                "param 'prompt' is missing: give 'prompt' (a string) or 'messages' (an array)",
            ),
            (
                json!({"prompt": "a", "messages": []}),
                "param 'prompt' cannot be given together with 'messages': give one of them",
            ),
            (json!({"prompt": " "}), "param 'prompt' must not be empty"),
            (
                json!({"prompt": 1}),
                "param 'prompt' must be a string, not a number",
            ),
            (
                json!({"prompt": "a", "temprature": 1}),
                "param 'temprature' is not a param of chat (it takes: model, prompt, messages, system, temperature, max_tokens, stop, json)",
            ),
            (
                json!({"prompt": "a", "model": ""}),
                "param 'model' must not be empty",
            ),
            (
                json!({"prompt": "a", "model": "gpt 4"}),
                "param 'model' must not contain spaces or control characters",
            ),
            (
                json!({"prompt": "a", "model": "m".repeat(257)}),
                "param 'model' must be at most 256 bytes",
            ),
            (
                json!({"prompt": "a", "system": ["x"]}),
                "param 'system' must be a string, not an array",
            ),
            (
                json!({"messages": "hi"}),
                "param 'messages' must be an array, not a string",
            ),
            (
                json!({"messages": []}),
                "param 'messages' must not be empty",
            ),
            (
                json!({"messages": ["hi"]}),
                "param 'messages[0]' must be an object {\"role\": ..., \"content\": ...}",
            ),
            (
                json!({"messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}]}),
                "param 'messages[1].role' must be \"system\", \"user\" or \"assistant\"",
            ),
            (
                json!({"messages": [{"content": "a"}]}),
                "param 'messages[0].role' must be \"system\", \"user\" or \"assistant\"",
            ),
            (
                json!({"messages": [{"role": "user"}]}),
                "param 'messages[0].content' is missing",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "text"}]}]}),
                "param 'messages[0].content' must be a string, not an array",
            ),
            (
                json!({"messages": [{"role": "user", "content": "a", "name": "x"}]}),
                "param 'messages[0].name' is not allowed (a message has only 'role' and 'content')",
            ),
            (
                json!({"prompt": "a", "temperature": 2.5}),
                "param 'temperature' must be from 0 to 2, not 2.5",
            ),
            (
                json!({"prompt": "a", "temperature": -0.1}),
                "param 'temperature' must be from 0 to 2, not -0.1",
            ),
            (
                json!({"prompt": "a", "temperature": "hot"}),
                "param 'temperature' must be a number, not a string",
            ),
            (
                json!({"prompt": "a", "max_tokens": 0}),
                "param 'max_tokens' must be a positive integer",
            ),
            (
                json!({"prompt": "a", "max_tokens": 1.5}),
                "param 'max_tokens' must be a positive integer",
            ),
            (
                json!({"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}),
                "param 'stop' must be a non-empty string or an array of 1 to 4 non-empty strings",
            ),
            (
                json!({"prompt": "a", "json": "yes"}),
                "param 'json' must be true or false",
            ),
            (
                json!({"prompt": "a", "max_tokens": -3}),
                "param 'max_tokens' must be a positive integer",
            ),
            (
                json!({"prompt": "a", "max_tokens": 5_000_000_000u64}),
                "param 'max_tokens' must be a positive integer",
            ),
            (
                json!({"prompt": "a", "stop": ""}),
                "param 'stop' must be a non-empty string or an array of 1 to 4 non-empty strings",
            ),
            (
                json!({"prompt": "a", "stop": []}),
                "param 'stop' must be a non-empty string or an array of 1 to 4 non-empty strings",
            ),
            (
                json!({"prompt": "a", "stop": [1]}),
                "param 'stop' must be a non-empty string or an array of 1 to 4 non-empty strings",
            ),
        ];
        for (params, want) in cases {
            check(params, Err(want));
        }
    }

    #[test]
    fn a_long_unknown_param_name_is_shortened() {
        let name = "x".repeat(200);
        let err = parse(&json!({ name: 1, "prompt": "a" }), "dflt")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("param '{}...'", "x".repeat(64))),
            "{err}"
        );
    }
}
