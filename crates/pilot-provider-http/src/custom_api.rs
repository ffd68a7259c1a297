//! `custom_api`: an authenticated call to an API the user described, either by naming one of
//! their custom integrations (its base URL plus `path`, its default headers) or by a full `url`.
//!
//! Credential binding: each `custom_api` credential is bound, for its whole life, to the origin
//! (scheme, host, port) stored with it: the one it was given, or its integration's base URL
//! origin when it was stored. A credential without a stored origin is never sent. A request gets
//! the credential bound to its own origin (the named integration's own credential first) and any
//! other origin gets none; the outbound client drops it again if a redirect leaves that origin.
//! An integration that was moved (or deleted and re-created) elsewhere since its credential was
//! stored no longer carries it: the step fails and says to store the credential again, so a
//! secret never follows an integration to a new host.

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use pilot_core::{ActionSpec, Credential, CredentialKind, Integration, ParamSpec, Secret};
use pilot_registry::{
    Method, Provider, ProviderContext, ProviderDescription, ProviderError, ProviderOutput,
};
use serde_json::{Map, Value};
use url::{Origin, Url};

use crate::request::{self, METHODS, Parts, shorten};

/// The `custom_api` provider.
#[derive(Debug, Clone, Copy, Default)]
pub struct CustomApi;

/// The header an `api_key` or `header` credential goes in when neither it nor its integration
/// names one.
pub const DEFAULT_KEY_HEADER: &str = "X-API-Key";

const PARAMS: &[&str] = &[
    "integration",
    "path",
    "url",
    "method",
    "query",
    "headers",
    "body",
];

#[async_trait]
impl Provider for CustomApi {
    fn describe(&self) -> ProviderDescription {
        ProviderDescription {
            name: "custom_api".into(),
            description: "Calls an API with the caller's credential for it, bound to its origin."
                .into(),
            actions: vec![ActionSpec {
                name: "request".into(),
                description: "Sends a request to a custom integration (base URL + path) or a URL."
                    .into(),
                params: vec![
                    ParamSpec::new(
                        "integration",
                        "string",
                        false,
                        "The name of one of your custom integrations.",
                    ),
                    ParamSpec::new(
                        "path",
                        "string",
                        false,
                        "Appended to the integration's base URL.",
                    ),
                    ParamSpec::new(
                        "url",
                        "string",
                        false,
                        "A full http or https URL, instead of an integration.",
                    )
                    .with_format("url"),
                    ParamSpec::new(
                        "method",
                        "string",
                        false,
                        &format!("{METHODS} (default GET)."),
                    ),
                    ParamSpec::new(
                        "query",
                        "object",
                        false,
                        "Query parameters (strings, numbers or booleans), appended URL-encoded.",
                    ),
                    ParamSpec::new(
                        "headers",
                        "object",
                        false,
                        "Header names to values; override the integration's default headers.",
                    ),
                    ParamSpec::new(
                        "body",
                        "any",
                        false,
                        "A string is sent as text/plain, any other JSON value as application/json; null sends no body.",
                    ),
                ],
                one_of: vec![vec!["url".into(), "integration".into()]],
            }],
            credential_types: vec![
                CredentialKind::Bearer,
                CredentialKind::Basic,
                CredentialKind::ApiKey,
                CredentialKind::Header,
                CredentialKind::OauthToken,
            ],
        }
    }

    async fn execute(
        &self,
        action: &str,
        params: &Value,
        ctx: &ProviderContext,
    ) -> Result<ProviderOutput, ProviderError> {
        if action != "request" {
            return Err(ProviderError::permanent(format!(
                "custom_api has no action '{action}'"
            )));
        }
        let params = request::object(params, "custom_api.request", PARAMS)?;
        let method = request::method(params, Some(Method::GET))?;
        let (mut url, integration) = target(params, ctx).await?;
        append_query(&mut url, params)?;

        let mut headers = Vec::new();
        let step_headers = request::headers(params)?;
        if let Some(integration) = &integration {
            headers.extend(
                integration
                    .default_headers
                    .iter()
                    .filter(|(name, _)| {
                        !step_headers
                            .iter()
                            .any(|(given, _)| given.eq_ignore_ascii_case(name))
                    })
                    .cloned(),
            );
        }
        headers.extend(step_headers);

        let credential = credential_for(&url.origin(), integration.as_ref(), ctx).await?;
        let parts = Parts {
            method,
            headers,
            body: request::body(params),
        };
        let mut outbound = parts.into_request(url, ctx);
        if let Some((header, origin)) = credential {
            outbound.credential_headers = vec![header];
            outbound.credential_origin = Some(origin);
        }
        request::send(outbound, ctx).await
    }
}

/// The URL to call, and the integration when one is named.
async fn target(
    params: &Map<String, Value>,
    ctx: &ProviderContext,
) -> Result<(Url, Option<Integration>), ProviderError> {
    let url = request::string(params, "url")?;
    let name = request::string(params, "integration")?;
    let path = request::string(params, "path")?;
    match (url, name) {
        (Some(_), Some(_)) => Err(ProviderError::permanent(
            "give either param 'url' or param 'integration', not both",
        )),
        (None, None) => Err(ProviderError::permanent(
            "param 'url' or param 'integration' is required",
        )),
        (Some(url), None) => {
            if path.is_some() {
                return Err(ProviderError::permanent(
                    "param 'path' goes with 'integration'; with 'url', put the path in the URL",
                ));
            }
            let url = Url::parse(url).map_err(|e| {
                ProviderError::permanent(format!("param 'url' is not a valid URL: {e}"))
            })?;
            Ok((url, None))
        }
        (None, Some(name)) => {
            let integration = ctx.integration(name).await?.ok_or_else(|| {
                ProviderError::permanent(format!("no custom integration named '{}'", shorten(name)))
            })?;
            let base = base_url(&integration)?;
            let url = join(&base, path.unwrap_or_default())?;
            Ok((url, Some(integration)))
        }
    }
}

fn base_url(integration: &Integration) -> Result<Url, ProviderError> {
    Url::parse(&integration.base_url).map_err(|e| {
        ProviderError::permanent(format!(
            "the base URL of integration '{}' is not a valid URL: {e}",
            shorten(&integration.name)
        ))
    })
}

/// Appends `path` to the base URL's path (`https://api.test/v1` + `/users` is
/// `https://api.test/v1/users`). The result always keeps the base URL's origin.
fn join(base: &Url, path: &str) -> Result<Url, ProviderError> {
    let mut text = base
        .as_str()
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_owned();
    if !path.is_empty() && !path.starts_with('/') {
        text.push('/');
    }
    text.push_str(path);
    let url = Url::parse(&text).map_err(|e| {
        ProviderError::permanent(format!("param 'path' does not make a valid URL: {e}"))
    })?;
    if url.origin() != base.origin() {
        return Err(ProviderError::permanent(
            "param 'path' may not change the integration's host",
        ));
    }
    Ok(url)
}

/// Appends the `query` param (an object of scalars; nulls left out), URL-encoded.
fn append_query(url: &mut Url, params: &Map<String, Value>) -> Result<(), ProviderError> {
    let map = match params.get("query") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(ProviderError::permanent("param 'query' must be an object")),
    };
    let mut pairs = Vec::with_capacity(map.len());
    for (name, value) in map {
        match request::scalar(value) {
            Ok(Some(text)) => pairs.push((name, text)),
            Ok(None) => {}
            Err(kind) => {
                return Err(ProviderError::permanent(format!(
                    "param 'query': the value of '{}' must be a string, number or boolean, got {kind}",
                    shorten(name)
                )));
            }
        }
    }
    if !pairs.is_empty() {
        let mut query = url.query_pairs_mut();
        for (name, value) in pairs {
            query.append_pair(name, &value);
        }
    }
    Ok(())
}

/// The credential header for a request to `origin`, with the origin it is bound to, or `None`.
/// A permanent error when the named integration's own credential was stored for another origin
/// than the one the integration points at now.
async fn credential_for(
    origin: &Origin,
    integration: Option<&Integration>,
    ctx: &ProviderContext,
) -> Result<Option<((String, Secret), String)>, ProviderError> {
    // The named integration's own credential first, then the others in stored order.
    let named = integration.map(|i| i.name.as_str());
    let mut candidates: Vec<&Credential> = ctx.credentials.iter().collect();
    candidates.sort_by_key(|c| c.integration.as_deref() != named || named.is_none());
    for credential in candidates {
        let Some((bound, owner)) = binding(credential, integration, ctx).await? else {
            continue;
        };
        if &bound != origin {
            continue;
        }
        let header = header_for(credential, owner.as_ref())?;
        return Ok(Some((header, bound.ascii_serialization())));
    }
    if let Some(integration) = integration
        && let Some(stored) = ctx
            .credentials
            .iter()
            .filter(|c| c.integration.as_deref() == Some(integration.name.as_str()))
            .find_map(|c| stored_origin(c).filter(|o| o != origin))
    {
        return Err(ProviderError::permanent(format!(
            "the credential of integration '{}' was stored for {} and the integration now \
             points at {}; a credential never follows its integration to another origin: \
             store it again (PUT /api/provider-credentials/custom_api) to use it there",
            shorten(&integration.name),
            stored.ascii_serialization(),
            origin.ascii_serialization(),
        )));
    }
    Ok(None)
}

/// The origin stored with `credential`, `None` when it has none (it is then never sent).
fn stored_origin(credential: &Credential) -> Option<Origin> {
    let url = Url::parse(credential.origin.as_deref()?).ok()?;
    Some(url.origin())
}

/// The origin `credential` is bound to and the integration it belongs to, `None` when unbound,
/// when its integration is gone, or when the integration now points at another origin than the
/// one the credential was stored for.
async fn binding(
    credential: &Credential,
    requested: Option<&Integration>,
    ctx: &ProviderContext,
) -> Result<Option<(Origin, Option<Integration>)>, ProviderError> {
    let Some(bound) = stored_origin(credential) else {
        return Ok(None);
    };
    let Some(name) = &credential.integration else {
        return Ok(Some((bound, None)));
    };
    let owner = match requested {
        Some(i) if &i.name == name => Some(i.clone()),
        _ => ctx.integration(name).await?,
    };
    let Some(owner) = owner else { return Ok(None) };
    let moved = Url::parse(&owner.base_url).map_or(true, |base| base.origin() != bound);
    if moved {
        return Ok(None);
    }
    Ok(Some((bound, Some(owner))))
}

fn header_for(
    credential: &Credential,
    owner: Option<&Integration>,
) -> Result<(String, Secret), ProviderError> {
    let secret = credential.secret.expose();
    Ok(match credential.kind {
        CredentialKind::Bearer | CredentialKind::OauthToken => (
            "Authorization".into(),
            Secret::new(format!("Bearer {secret}")),
        ),
        CredentialKind::Basic => {
            if !secret.contains(':') {
                return Err(ProviderError::permanent(
                    "the basic credential must be stored as 'user:password'",
                ));
            }
            (
                "Authorization".into(),
                Secret::new(format!("Basic {}", STANDARD.encode(secret))),
            )
        }
        CredentialKind::ApiKey | CredentialKind::Header => {
            let name = credential
                .header_name
                .clone()
                .or_else(|| owner.and_then(|i| i.auth_header.clone()))
                .unwrap_or_else(|| DEFAULT_KEY_HEADER.into());
            (name, credential.secret.clone())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_onto_the_base_url() {
        let cases = [
            (
                "https://api.test/v1",
                "/users",
                Ok("https://api.test/v1/users"),
            ),
            (
                "https://api.test/v1/",
                "/users",
                Ok("https://api.test/v1/users"),
            ),
            (
                "https://api.test/v1",
                "users",
                Ok("https://api.test/v1/users"),
            ),
            ("https://api.test/v1", "", Ok("https://api.test/v1")),
            (
                "https://api.test",
                "/users?x=1",
                Ok("https://api.test/users?x=1"),
            ),
            (
                "https://api.test:8443/v1?key=1",
                "/a",
                Ok("https://api.test:8443/v1/a"),
            ),
            (
                "https://api.test",
                "//evil.test/x",
                Ok("https://api.test//evil.test/x"),
            ),
            (
                "https://api.test",
                "@evil.test/x",
                Ok("https://api.test/@evil.test/x"),
            ),
            (
                "https://api.test/v1",
                "/../../admin",
                Ok("https://api.test/admin"),
            ),
            (
                "https://api.test",
                "/\\evil.test",
                Ok("https://api.test//evil.test"),
            ),
            (
                "https://api.test",
                ".evil.test/x",
                Ok("https://api.test/.evil.test/x"),
            ),
        ];
        for (base, path, expect) in cases {
            let got = join(&Url::parse(base).unwrap(), path).map(|u| u.to_string());
            assert_eq!(
                got.as_deref().map_err(|e| e.to_string()),
                expect.map_err(|e: &str| e.to_owned()),
                "{base} + {path}"
            );
        }
    }

    #[test]
    fn credential_headers_by_kind() {
        let credential = |kind, secret: &str, header: Option<&str>| Credential {
            provider: "custom_api".into(),
            kind,
            secret: Secret::new(secret),
            origin: Some("https://api.test".into()),
            integration: None,
            header_name: header.map(str::to_owned),
        };
        let integration = Integration {
            name: "crm".into(),
            base_url: "https://api.test".into(),
            auth_scheme: Some(CredentialKind::ApiKey),
            auth_header: Some("X-Crm-Key".into()),
            default_headers: Vec::new(),
        };
        let cases = [
            (
                credential(CredentialKind::Bearer, "tok", None),
                None,
                ("Authorization", "Bearer tok"),
            ),
            (
                credential(CredentialKind::OauthToken, "tok", None),
                None,
                ("Authorization", "Bearer tok"),
            ),
            (
                credential(CredentialKind::Basic, "al:pw", None),
                None,
                ("Authorization", "Basic YWw6cHc="),
            ),
            (
                credential(CredentialKind::ApiKey, "k", None),
                None,
                ("X-API-Key", "k"),
            ),
            (
                credential(CredentialKind::Header, "k", Some("X-Token")),
                None,
                ("X-Token", "k"),
            ),
            (
                credential(CredentialKind::ApiKey, "k", None),
                Some(&integration),
                ("X-Crm-Key", "k"),
            ),
            (
                credential(CredentialKind::ApiKey, "k", Some("X-Own")),
                Some(&integration),
                ("X-Own", "k"),
            ),
        ];
        for (credential, owner, (name, value)) in cases {
            let (got_name, got_value) = header_for(&credential, owner).unwrap();
            assert_eq!(
                (got_name.as_str(), got_value.expose()),
                (name, value),
                "{:?}",
                credential.kind
            );
        }
        let err = header_for(
            &credential(CredentialKind::Basic, "no-colon-secret", None),
            None,
        )
        .unwrap_err();
        assert!(!err.to_string().contains("no-colon-secret"));
    }
}
