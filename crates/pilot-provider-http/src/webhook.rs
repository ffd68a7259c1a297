//! `webhook`: sends a request to a URL the plan gives (`post`, or `send` with a method). It
//! carries no credential: anything the target needs goes in `headers`. The URL goes through the
//! outbound guard like every user-supplied URL.

use async_trait::async_trait;
use pilot_core::{ActionSpec, ParamSpec};
use pilot_registry::{
    Method, Provider, ProviderContext, ProviderDescription, ProviderError, ProviderOutput,
};
use serde_json::Value;
use url::Url;

use crate::request::{self, METHODS, Parts};

/// The `webhook` provider.
#[derive(Debug, Clone, Copy, Default)]
pub struct Webhook;

const POST_PARAMS: &[&str] = &["url", "body", "headers"];
const SEND_PARAMS: &[&str] = &["method", "url", "body", "headers"];

#[async_trait]
impl Provider for Webhook {
    fn describe(&self) -> ProviderDescription {
        let common = || {
            vec![
                ParamSpec::new("url", "string", true, "The http or https URL to call.")
                    .with_format("url"),
                ParamSpec::new(
                    "body",
                    "any",
                    false,
                    "A string is sent as text/plain, any other JSON value as application/json; null sends no body.",
                ),
                ParamSpec::new(
                    "headers",
                    "object",
                    false,
                    "Header names to values; a Content-Type here overrides the body's.",
                ),
            ]
        };
        let mut send_params = vec![ParamSpec::new(
            "method",
            "string",
            true,
            &format!("{METHODS}."),
        )];
        send_params.extend(common());
        ProviderDescription {
            name: "webhook".into(),
            description: "Calls a URL: posts a JSON or text body and returns the answer.".into(),
            actions: vec![
                ActionSpec {
                    name: "post".into(),
                    description: "POSTs the body to the URL.".into(),
                    params: common(),
                    one_of: Vec::new(),
                },
                ActionSpec {
                    name: "send".into(),
                    description: "Sends a request with the given method to the URL.".into(),
                    params: send_params,
                    one_of: Vec::new(),
                },
            ],
            credential_types: Vec::new(),
        }
    }

    async fn execute(
        &self,
        action: &str,
        params: &Value,
        ctx: &ProviderContext,
    ) -> Result<ProviderOutput, ProviderError> {
        let (params, method) = match action {
            "post" => (
                request::object(params, "webhook.post", POST_PARAMS)?,
                Method::POST,
            ),
            "send" => {
                let params = request::object(params, "webhook.send", SEND_PARAMS)?;
                (params, request::method(params, None)?)
            }
            other => {
                return Err(ProviderError::permanent(format!(
                    "webhook has no action '{other}'"
                )));
            }
        };
        let url = request::required_string(params, "url")?;
        let url = Url::parse(url).map_err(|e| {
            ProviderError::permanent(format!("param 'url' is not a valid URL: {e}"))
        })?;
        let parts = Parts {
            method,
            headers: request::headers(params)?,
            body: request::body(params),
        };
        request::send(parts.into_request(url, ctx), ctx).await
    }
}
