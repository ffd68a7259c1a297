//! The one implementation of the OpenAI-compatible chat protocol: `POST {base}/chat/completions`
//! with the caller's key as a bearer token, bound to the base URL's origin, through the shared
//! outbound client. Each vendor is this provider with a different [`Vendor`].

use std::borrow::Cow;

use async_trait::async_trait;
use bytes::Bytes;
use pilot_core::{ActionSpec, ParamSpec, Secret};
use pilot_registry::{
    Method, OutboundRequest, OutboundResponse, Provider, ProviderContext, ProviderDescription,
    ProviderError, ProviderOutput, classify_status,
};
use serde_json::{Value, json};
use url::Url;

use crate::params::{self, ChatParams, PARAMS};
use crate::protocol::{self, BadCompletion, Completion, MAX_MESSAGE_CHARS};
use crate::{AiError, Vendor};
use pilot_core::redact::Redactor;

/// A chat provider for one vendor. Construct it with the operator's base URL, or `None` for
/// the vendor's public endpoint, and register it.
#[derive(Debug, Clone)]
pub struct ChatProvider {
    vendor: Vendor,
    /// Where requests go and which origin the key is bound to, or why the base URL is unusable
    /// (reported on each call, so a bad configuration fails steps rather than startup).
    target: Result<Target, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    /// `{base}/chat/completions`.
    endpoint: Url,
    /// `scheme://host:port` of the base URL: the only origin the key is sent to.
    origin: String,
}

impl ChatProvider {
    /// The provider for `vendor`, sending to `base_url` (`https://api.openai.com/v1` style: the
    /// path up to, not including, `/chat/completions`) or to the vendor's default.
    pub fn new(vendor: Vendor, base_url: Option<Url>) -> Self {
        let base = match base_url {
            Some(url) => Ok(url),
            None => Url::parse(vendor.default_base_url).map_err(|e| e.to_string()),
        };
        Self {
            vendor,
            target: base.and_then(|base| target(&base)),
        }
    }

    /// The vendor this provider speaks to.
    pub fn vendor(&self) -> &Vendor {
        &self.vendor
    }
}

#[async_trait]
impl Provider for ChatProvider {
    fn describe(&self) -> ProviderDescription {
        let params = PARAMS
            .iter()
            .map(|&(name, kind, description)| match name {
                "model" => {
                    let description = format!("{description} {}.", self.vendor.default_model);
                    ParamSpec::new(name, kind, false, &description)
                }
                _ => ParamSpec::new(name, kind, false, description),
            })
            .collect();
        ProviderDescription {
            name: self.vendor.name.to_owned(),
            description: self.vendor.description.to_owned(),
            actions: vec![ActionSpec {
                name: "chat".into(),
                description: "Sends a prompt or a conversation to a chat model and returns its answer: text, or a JSON value in JSON mode.".into(),
                params,
                one_of: vec![vec!["prompt".into(), "messages".into()]],
            }],
            credential_types: self.vendor.credential_types.to_vec(),
        }
    }

    async fn execute(
        &self,
        action: &str,
        params: &Value,
        ctx: &ProviderContext,
    ) -> Result<ProviderOutput, ProviderError> {
        let provider = self.vendor.name;
        if action != "chat" {
            let action = params::shorten(action);
            return Err(AiError::UnknownAction { provider, action }.into());
        }
        let params = params::parse(params, self.vendor.default_model)?;
        let key = self.key(ctx)?;
        let redactor = Redactor::for_secrets(&[key]);
        match self.chat(&params, key, ctx, &redactor).await {
            Ok(mut output) => {
                redactor.redact_value(&mut output.output);
                redactor.redact_value(&mut output.metadata);
                output.message = output.message.map(|m| redactor.redact_str(&m).into_owned());
                Ok(output)
            }
            Err(e) => Err(e.into_provider_error(|m| redactor.redact_str(&m).into_owned())),
        }
    }
}

impl ChatProvider {
    async fn chat(
        &self,
        params: &ChatParams<'_>,
        key: &str,
        ctx: &ProviderContext,
        redactor: &Redactor,
    ) -> Result<ProviderOutput, AiError> {
        let provider = self.vendor.name;
        let target = self
            .target
            .as_ref()
            .map_err(|reason| AiError::InvalidBaseUrl {
                provider,
                reason: reason.clone(),
            })?;
        let body = protocol::request_body(params).map_err(|e| AiError::InvalidParam {
            param: "params".into(),
            reason: format!("cannot be encoded as JSON ({e})"),
        })?;
        let request = OutboundRequest {
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("Accept".into(), "application/json".into()),
                ("Idempotency-Key".into(), ctx.idempotency_key.clone()),
            ],
            credential_headers: vec![(
                "Authorization".into(),
                Secret::new(format!("Bearer {key}")),
            )],
            credential_origin: Some(target.origin.clone()),
            body: Some(Bytes::from(body)),
            timeout: ctx.timeout,
            trusted: true,
            ..OutboundRequest::new(Method::POST, target.endpoint.clone())
        };
        let response = ctx
            .http
            .send(request)
            .await
            .map_err(|cause| AiError::Transport { provider, cause })?;
        if !(200..300).contains(&response.status) {
            return Err(status_error(provider, &response, redactor));
        }
        let completion = protocol::parse_completion(&response.body).map_err(|bad| match bad {
            BadCompletion::Malformed(reason) => AiError::MalformedResponse {
                provider,
                reason: clean(redactor, &reason),
            },
            BadCompletion::Refused(message) => AiError::Refused {
                provider,
                message: clean(redactor, &message),
            },
        })?;
        let request_id = response
            .header("x-request-id")
            .map(str::to_owned)
            .or_else(|| completion.id.clone());
        output(provider, params, completion, request_id)
    }

    /// The caller's key for this vendor: the first credential stored under the vendor's name
    /// with an accepted kind, trimmed; it must be printable ASCII to be sent in a header.
    fn key<'a>(&self, ctx: &'a ProviderContext) -> Result<&'a str, AiError> {
        let provider = self.vendor.name;
        let credential = ctx
            .credentials
            .iter()
            .find(|c| c.provider == provider && self.vendor.credential_types.contains(&c.kind))
            .ok_or(AiError::MissingCredential { provider })?;
        let key = credential.secret.expose().trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AiError::InvalidCredential { provider });
        }
        Ok(key)
    }
}

/// The endpoint and key origin for a base URL. Messages never quote the URL: an operator may
/// have put a password in it.
fn target(base: &Url) -> Result<Target, String> {
    let scheme = base.scheme();
    if !matches!(scheme, "http" | "https") {
        return Err(format!("its scheme is '{scheme}', not http or https"));
    }
    if !base.username().is_empty() || base.password().is_some() {
        return Err("it holds a user name or password; keys belong in credentials".into());
    }
    let (Some(host), Some(port)) = (base.host_str(), base.port_or_known_default()) else {
        return Err("it has no host".into());
    };
    let origin = format!("{scheme}://{host}:{port}");
    let mut endpoint = base.clone();
    endpoint
        .path_segments_mut()
        .map_err(|()| "it cannot take a path".to_owned())?
        .pop_if_empty()
        .extend(["chat", "completions"]);
    Ok(Target { endpoint, origin })
}

/// The error for a non-2xx answer, with the server's message redacted and truncated. The
/// registry's `classify_status` decides retryable or not and reads `Retry-After`.
fn status_error(
    provider: &'static str,
    response: &OutboundResponse,
    redactor: &Redactor,
) -> AiError {
    let status = response.status;
    let message =
        protocol::server_message(&response.body).map_or_else(String::new, |m| clean(redactor, &m));
    match classify_status(response, redactor) {
        Some(class) if class.is_retryable() => AiError::Unavailable {
            provider,
            status,
            message,
            retry_after: class.retry_after(),
        },
        _ => AiError::Rejected {
            provider,
            status,
            message,
        },
    }
}

/// Redacts, then truncates, so a cut can never leave part of the key behind.
fn clean(redactor: &Redactor, text: &str) -> String {
    protocol::truncate(&redactor.redact_str(text), MAX_MESSAGE_CHARS)
}

/// The step's output and metadata from a completion.
fn output(
    provider: &'static str,
    params: &ChatParams<'_>,
    completion: Completion,
    request_id: Option<String>,
) -> Result<ProviderOutput, AiError> {
    let Completion {
        model,
        content,
        finish_reason,
        usage,
        ..
    } = completion;
    let output = if params.json {
        protocol::parse_json_answer(&content).map_err(|e| {
            let hint = if finish_reason.as_deref() == Some("length") {
                "; the answer was cut at max_tokens, raise it"
            } else {
                ""
            };
            AiError::InvalidJsonAnswer {
                provider,
                reason: format!("{e}{hint}"),
            }
        })?
    } else {
        Value::String(content)
    };
    let model: Cow<'_, str> = model.map_or(Cow::Borrowed(params.model), Cow::Owned);
    let message = format!(
        "{model}: {} tokens, finish_reason {}",
        usage
            .total_tokens
            .map_or_else(|| "?".to_owned(), |n| n.to_string()),
        finish_reason.as_deref().unwrap_or("none"),
    );
    let metadata = json!({
        "model": model,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "finish_reason": finish_reason,
        "request_id": request_id,
    });
    Ok(ProviderOutput {
        output,
        message: Some(message),
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GROQ, OPENAI};

    fn check(base: Option<&str>, expect: Result<(&str, &str), &str>) {
        let provider = ChatProvider::new(OPENAI, base.map(|b| Url::parse(b).unwrap()));
        match (&provider.target, expect) {
            (Ok(t), Ok((endpoint, origin))) => {
                assert_eq!(t.endpoint.as_str(), endpoint);
                assert_eq!(t.origin, origin);
            }
            (Err(reason), Err(want)) => assert!(reason.contains(want), "{reason}"),
            (got, want) => panic!("{base:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn the_endpoint_is_the_base_url_plus_chat_completions() {
        check(
            None,
            Ok((
                "https://api.openai.com/v1/chat/completions",
                "https://api.openai.com:443",
            )),
        );
        check(
            Some("http://127.0.0.1:8080/v1"),
            Ok((
                "http://127.0.0.1:8080/v1/chat/completions",
                "http://127.0.0.1:8080",
            )),
        );
        check(
            Some("http://127.0.0.1:8080/v1/"),
            Ok((
                "http://127.0.0.1:8080/v1/chat/completions",
                "http://127.0.0.1:8080",
            )),
        );
        check(
            Some("http://localhost:11434"),
            Ok((
                "http://localhost:11434/chat/completions",
                "http://localhost:11434",
            )),
        );
        check(
            Some("https://[::1]/openai/v1?api-version=2"),
            Ok((
                "https://[::1]/openai/v1/chat/completions?api-version=2",
                "https://[::1]:443",
            )),
        );
        check(
            Some("ftp://example.com/v1"),
            Err("its scheme is 'ftp', not http or https"),
        );
        check(Some("mailto:x@example.com"), Err("its scheme is 'mailto'"));
        check(
            Some("https://u:hunter2@example.com/v1"),
            Err("holds a user name or password"),
        );
        let groq = ChatProvider::new(GROQ, None);
        assert_eq!(
            groq.target.unwrap().endpoint.as_str(),
            "https://api.groq.com/openai/v1/chat/completions"
        );
    }
}
