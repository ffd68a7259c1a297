//! The OpenAI-compatible chat completions wire format: the request body built from validated
//! params, and the response read into typed structs in one pass. Reading is tolerant of extra
//! fields and strict about the ones used: a body that is not JSON, is cut short, has no choice
//! or has a field of the wrong type gives a reason, never a panic.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::params::{ChatParams, Message, Stop};

/// The longest server-provided text kept in an error message, in characters.
pub(crate) const MAX_MESSAGE_CHARS: usize = 500;

/// What `POST /chat/completions` receives.
#[derive(Debug, Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: &'a [Message<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'a Stop<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<ResponseFormat>,
}

#[derive(Debug, Serialize)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: &'static str,
}

/// The request body for `params`.
pub(crate) fn request_body(params: &ChatParams<'_>) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&ChatRequest {
        model: params.model,
        messages: &params.messages,
        temperature: params.temperature,
        max_tokens: params.max_tokens,
        stop: params.stop.as_ref(),
        response_format: params.json.then_some(ResponseFormat {
            kind: "json_object",
        }),
    })
}

/// The parts of a chat completion Pilot uses.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Completion {
    /// The body's `id`.
    pub(crate) id: Option<String>,
    /// The model that answered, as the server names it.
    pub(crate) model: Option<String>,
    /// The first choice's text.
    pub(crate) content: String,
    /// Why generation stopped (`stop`, `length`...).
    pub(crate) finish_reason: Option<String>,
    /// Token counts, when the server reports them.
    pub(crate) usage: Usage,
}

/// Token counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub(crate) struct Usage {
    pub(crate) prompt_tokens: Option<u64>,
    pub(crate) completion_tokens: Option<u64>,
    pub(crate) total_tokens: Option<u64>,
}

/// Why a 2xx body is not a usable completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BadCompletion {
    /// Not a completion: the reason.
    Malformed(String),
    /// The model declined; its refusal text.
    Refused(String),
}

#[derive(Debug, Deserialize)]
struct ChatResponse {
    id: Option<String>,
    model: Option<String>,
    choices: Option<Vec<Choice>>,
    usage: Option<Usage>,
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    message: Option<AssistantMessage>,
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AssistantMessage {
    content: Option<String>,
    refusal: Option<String>,
}

/// Reads a 2xx response body.
pub(crate) fn parse_completion(body: &[u8]) -> Result<Completion, BadCompletion> {
    let malformed = |reason: String| Err(BadCompletion::Malformed(reason));
    if body.iter().all(u8::is_ascii_whitespace) {
        return malformed("the body is empty".into());
    }
    let response: ChatResponse = match serde_json::from_slice(body) {
        Ok(response) => response,
        Err(e) if e.is_eof() => return malformed(format!("the body is cut short ({e})")),
        Err(e) if e.is_syntax() => return malformed(format!("the body is not JSON ({e})")),
        Err(e) => return malformed(format!("unexpected shape ({e})")),
    };
    let Some(choices) = response.choices else {
        if let Some(error) = &response.error {
            let message = error_text(error).unwrap_or_default();
            return malformed(format!("it holds an error instead of choices: {message}"));
        }
        return malformed("'choices' is missing".into());
    };
    let Some(choice) = choices.into_iter().next() else {
        return malformed("'choices' is empty".into());
    };
    let Some(message) = choice.message else {
        return malformed("'choices[0].message' is missing".into());
    };
    let Some(content) = message.content else {
        if let Some(refusal) = message.refusal {
            return Err(BadCompletion::Refused(refusal));
        }
        let reason = choice.finish_reason.as_deref().unwrap_or("none given");
        return malformed(format!(
            "'choices[0].message.content' is missing (finish_reason: {reason})"
        ));
    };
    Ok(Completion {
        id: response.id,
        model: response.model,
        content,
        finish_reason: choice.finish_reason,
        usage: response.usage.unwrap_or_default(),
    })
}

/// Parses a JSON-mode answer, tolerating a surrounding Markdown code fence.
pub(crate) fn parse_json_answer(content: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str(strip_code_fence(content.trim()))
}

fn strip_code_fence(text: &str) -> &str {
    let Some(inner) = text.strip_prefix("```").and_then(|t| t.strip_suffix("```")) else {
        return text;
    };
    // Drop the language tag (```json) on the opening line.
    inner.split_once('\n').map_or(inner, |(tag, rest)| {
        if tag.trim().chars().all(|c| c.is_ascii_alphanumeric()) {
            rest
        } else {
            inner
        }
    })
}

/// The server's own explanation in an error body: `error.message` (OpenAI, Groq), or an
/// `error`, `message` or `detail` string (other compatible servers), or else the body itself
/// when it is text. Whitespace and control characters are collapsed to single spaces; the
/// caller redacts and truncates.
pub(crate) fn server_message(body: &[u8]) -> Option<String> {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(value) => error_text(&value)?,
        Err(_) => std::str::from_utf8(body).ok()?.to_owned(),
    };
    let collapsed = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    (!collapsed.is_empty()).then_some(collapsed)
}

fn error_text(value: &Value) -> Option<String> {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    text(value.pointer("/error/message"))
        .or_else(|| text(value.get("error")))
        .or_else(|| text(value.get("message")))
        .or_else(|| text(value.get("detail")))
}

/// `text` cut to `max` characters, marked with `...` when cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &str, expect: Result<(&str, Option<&str>, Usage), &str>) {
        let got = parse_completion(body.as_bytes());
        match (got, expect) {
            (Ok(c), Ok((content, finish, usage))) => {
                assert_eq!(c.content, content, "{body}");
                assert_eq!(c.finish_reason.as_deref(), finish, "{body}");
                assert_eq!(c.usage, usage, "{body}");
            }
            (Err(BadCompletion::Malformed(reason)), Err(want))
            | (Err(BadCompletion::Refused(reason)), Err(want)) => {
                assert!(reason.contains(want), "{body}: {reason:?} lacks {want:?}");
            }
            (got, want) => panic!("{body}: got {got:?}, want {want:?}"),
        }
    }

    const NO_USAGE: Usage = Usage {
        prompt_tokens: None,
        completion_tokens: None,
        total_tokens: None,
    };

    #[test]
    fn completions_are_read_strictly_and_never_panic() {
        let full = Usage {
            prompt_tokens: Some(3),
            completion_tokens: Some(2),
            total_tokens: Some(5),
        };
        check(
            r#"{"id":"c1","model":"m","choices":[{"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5},"extra":[1]}"#,
            Ok(("hi", Some("stop"), full)),
        );
        check(
            r#"{"choices":[{"message":{"content":""}}]}"#,
            Ok(("", None, NO_USAGE)),
        );
        check(
            r#"{"choices":[{"message":{"content":"a"},"finish_reason":null}],"usage":null}"#,
            Ok(("a", None, NO_USAGE)),
        );
        check("", Err("the body is empty"));
        check("  \n", Err("the body is empty"));
        check("<html>502 Bad Gateway</html>", Err("not JSON"));
        check(
            r#"{"choices":[{"message":{"content":"hel"#,
            Err("cut short"),
        );
        check(r#"{"choices":[]}"#, Err("'choices' is empty"));
        check(r#"{"id":"x"}"#, Err("'choices' is missing"));
        check(
            r#"{"error":{"message":"model overloaded"}}"#,
            Err("error instead of choices: model overloaded"),
        );
        check(r#"{"choices":{}}"#, Err("unexpected shape"));
        check(
            r#"{"choices":[{"message":{"content":42}}]}"#,
            Err("unexpected shape"),
        );
        check(
            r#"{"choices":[{"message":{"content":"x"}}],"usage":{"total_tokens":"many"}}"#,
            Err("unexpected shape"),
        );
        check(
            r#"{"choices":[{"message":{"content":"x"}}],"usage":{"total_tokens":-1}}"#,
            Err("unexpected shape"),
        );
        check(
            r#"{"choices":[{}]}"#,
            Err("'choices[0].message' is missing"),
        );
        check(
            r#"{"choices":[{"message":{"content":null},"finish_reason":"tool_calls"}]}"#,
            Err("finish_reason: tool_calls"),
        );
        check(
            r#"{"choices":[{"message":{"content":null,"refusal":"I can't help with that."}}]}"#,
            Err("I can't help"),
        );
        check("[1,2]", Err("unexpected shape"));
        check("null", Err("unexpected shape"));
        check("\u{feff}{}", Err("not JSON"));
    }

    #[test]
    fn json_answers_may_be_fenced() {
        let cases = [
            (r#"{"a":1}"#, Some(r#"{"a":1}"#)),
            ("  [1, 2]\n", Some("[1,2]")),
            ("```json\n{\"a\":1}\n```", Some(r#"{"a":1}"#)),
            ("```\n{\"a\":1}\n```", Some(r#"{"a":1}"#)),
            ("Sure! {\"a\":1}", None),
            ("{\"a\":", None),
            ("", None),
        ];
        for (answer, want) in cases {
            let got = parse_json_answer(answer).ok().map(|v| v.to_string());
            assert_eq!(got.as_deref(), want, "{answer:?}");
        }
    }

    #[test]
    fn server_messages_come_from_the_usual_places() {
        let cases = [
            (
                r#"{"error":{"message":"Invalid model","type":"invalid_request_error"}}"#,
                Some("Invalid model"),
            ),
            (r#"{"error":"rate limited"}"#, Some("rate limited")),
            (r#"{"message":"nope"}"#, Some("nope")),
            (r#"{"detail":"Not Found"}"#, Some("Not Found")),
            (r#"{"error":{"code":500}}"#, None),
            (
                "upstream\r\n  connect error",
                Some("upstream connect error"),
            ),
            ("", None),
            ("a\u{0}\u{1b}[31mb\u{ff}", Some("a [31mb\u{ff}")),
        ];
        for (body, want) in cases {
            assert_eq!(server_message(body.as_bytes()).as_deref(), want, "{body:?}");
        }
        assert_eq!(server_message(&[0xff, 0xfe]), None);
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate("héllo", 2), "hé...");
        assert_eq!(truncate("héllo", 5), "héllo");
        assert_eq!(truncate("", 0), "");
    }
}
