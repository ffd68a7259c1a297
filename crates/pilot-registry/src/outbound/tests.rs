//! Connection tests of the guarded client against fake servers on loopback addresses. The
//! allowlist opens 127.0.0.1/32 only; the addresses that must stay blocked (127.0.0.2, [::1],
//! [::ffff:127.0.0.2], `0x7f000002`...) have listeners of their own, so a regression would land
//! on this machine and show up as a counted connection. Nothing here leaves 127.0.0.0/8 and
//! [::1], and names resolve through a [`StaticLookup`], never DNS.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use pilot_core::redact::Redactor;

use super::testing::{FakeServer, Reply};
use super::*;

fn lookup() -> StaticLookup {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    StaticLookup::new()
        .with("allowed.test", [ip("127.0.0.1")])
        .with("sneaky.test", [ip("127.0.0.1"), ip("127.0.0.2")])
        .with("other.test", [ip("127.0.0.2")])
}

fn client_with(config: OutboundConfig) -> OutboundClient {
    OutboundClient::with_lookup(config, Arc::new(lookup())).unwrap()
}

fn client() -> OutboundClient {
    client_with(OutboundConfig {
        allow: parse_allowlist("127.0.0.1/32").unwrap(),
        ..OutboundConfig::default()
    })
}

fn request(method: Method, url: &str) -> OutboundRequest {
    OutboundRequest {
        timeout: Duration::from_secs(10),
        ..OutboundRequest::new(method, Url::parse(url).unwrap())
    }
}

async fn loopback(ip: &str, script: Vec<Reply>) -> FakeServer {
    FakeServer::start_on(ip.parse().unwrap(), script)
        .await
        .unwrap()
}

#[tokio::test]
async fn success_reads_status_headers_and_body_over_one_pooled_connection() {
    let server = FakeServer::start(vec![
        Reply::json(200, &json!({"ok": true})).header("x-extra", "1"),
    ])
    .await
    .unwrap();
    let client = client();
    let mut req = request(Method::POST, server.url("/hook?a=1").as_str());
    req.headers = vec![("Content-Type".into(), "application/json".into())];
    req.body = Some(Bytes::from_static(b"{\"n\":1}"));
    let response = client.send(req.clone()).await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.header("x-extra"), Some("1"));
    assert_eq!(&response.body[..], b"{\"ok\":true}");
    assert_eq!(response.url, server.url("/hook?a=1"));
    assert!(classify_status(&response, &Redactor::default()).is_none());

    client.send(req).await.unwrap();
    let seen = server.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].target, "/hook?a=1");
    assert_eq!(seen[0].body, b"{\"n\":1}");
    assert_eq!(seen[0].header("content-type"), Some("application/json"));
    assert!(seen[0].header("user-agent").unwrap().starts_with("pilot/"));
    assert_eq!(
        server.connections(),
        1,
        "the second request reuses the pooled connection"
    );
}

#[tokio::test]
async fn names_resolve_through_the_injected_lookup_and_are_checked() {
    let server = FakeServer::start(vec![Reply::text(200, "hi")])
        .await
        .unwrap();
    let blocked = loopback("127.0.0.2", vec![Reply::text(200, "reached")]).await;
    let client = client();
    let port = server.addr().port();
    let response = client
        .send(request(
            Method::GET,
            &format!("http://allowed.test:{port}/"),
        ))
        .await
        .unwrap();
    assert_eq!(&response.body[..], b"hi");

    for host in ["sneaky.test", "other.test"] {
        let url = format!("http://{host}:{}/", blocked.addr().port());
        let err = client.send(request(Method::GET, &url)).await.unwrap_err();
        assert!(
            matches!(err, OutboundError::Blocked(ref m) if m.contains("127.0.0.2")),
            "{host}: {err}"
        );
    }
    let err = client
        .send(request(Method::GET, "http://unknown.test/"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, OutboundError::Connect(ref m) if m.contains("unknown.test")),
        "{err}"
    );
    assert_eq!(blocked.connections(), 0);
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn loopback_addresses_outside_the_allowlist_stay_blocked_in_every_spelling() {
    let v4 = loopback("127.0.0.2", vec![Reply::text(200, "reached")]).await;
    let v6 = loopback("::1", vec![Reply::text(200, "reached")]).await;
    let client = client();
    let p = v4.addr().port();
    let q = v6.addr().port();
    let urls = [
        format!("http://127.0.0.2:{p}/"),
        format!("http://0x7f000002:{p}/"),
        format!("http://2130706434:{p}/"),
        format!("http://0177.0.0.2:{p}/"),
        format!("http://127.2:{p}/"),
        format!("http://[::ffff:127.0.0.2]:{p}/"),
        format!("http://[::ffff:7f00:2]:{p}/"),
        format!("http://[::1]:{q}/"),
        format!("http://[0:0:0:0:0:0:0:1]:{q}/"),
    ];
    for url in &urls {
        let err = client.send(request(Method::GET, url)).await.unwrap_err();
        assert!(matches!(err, OutboundError::Blocked(_)), "{url}: {err}");
    }
    assert_eq!(v4.connections(), 0, "127.0.0.2 was reached");
    assert_eq!(v6.connections(), 0, "[::1] was reached");
}

#[tokio::test]
async fn a_redirect_to_a_blocked_address_is_refused_before_connecting() {
    let target = loopback("127.0.0.2", vec![Reply::text(200, "reached")]).await;
    let p = target.addr().port();
    for location in [
        format!("http://127.0.0.2:{p}/x"),
        format!("http://[::ffff:127.0.0.2]:{p}/x"),
        format!("http://other.test:{p}/"),
    ] {
        let server = FakeServer::start(vec![Reply::redirect(302, &location)])
            .await
            .unwrap();
        let err = client()
            .send(request(Method::GET, server.url("/start").as_str()))
            .await
            .unwrap_err();
        assert!(
            matches!(err, OutboundError::Blocked(_)),
            "{location}: {err}"
        );
        assert_eq!(server.requests().len(), 1);
    }
    assert_eq!(target.connections(), 0);
}

fn with_credential(mut req: OutboundRequest, origin: &str) -> OutboundRequest {
    req.credential_headers = vec![("X-API-Key".into(), Secret::new("k-123"))];
    req.credential_origin = Some(origin.to_owned());
    req
}

#[tokio::test]
async fn a_cross_origin_redirect_drops_the_credential_and_sensitive_headers() {
    let b = FakeServer::start(vec![Reply::text(200, "landed")])
        .await
        .unwrap();
    let a = FakeServer::start(vec![Reply::redirect(307, b.url("/landing").as_str())])
        .await
        .unwrap();
    let mut req = with_credential(request(Method::POST, a.url("/start").as_str()), &a.origin());
    req.headers = vec![
        ("Authorization".into(), "Bearer plain".into()),
        ("Cookie".into(), "c=1".into()),
        ("X-Trace".into(), "t".into()),
    ];
    req.body = Some(Bytes::from_static(b"payload"));
    let response = client().send(req).await.unwrap();
    assert_eq!(&response.body[..], b"landed");
    assert_eq!(response.url, b.url("/landing"));

    let first = &a.requests()[0];
    assert_eq!(first.header("x-api-key"), Some("k-123"));
    assert_eq!(first.header("authorization"), Some("Bearer plain"));
    let second = &b.requests()[0];
    assert_eq!(second.header("x-api-key"), None);
    assert_eq!(second.header("authorization"), None);
    assert_eq!(second.header("cookie"), None);
    assert_eq!(second.header("x-trace"), Some("t"));
    assert_eq!(
        (second.method.as_str(), &second.body[..]),
        ("POST", &b"payload"[..]),
        "307 keeps method and body"
    );
}

#[tokio::test]
async fn credentials_go_only_to_their_origin() {
    let server = FakeServer::start(vec![Reply::redirect(302, "/next"), Reply::text(200, "ok")])
        .await
        .unwrap();
    let client = client();
    // Same origin, through a redirect: attached on both hops.
    client
        .send(with_credential(
            request(Method::GET, server.url("/").as_str()),
            &server.origin(),
        ))
        .await
        .unwrap();
    // Bound to another origin (another port): never attached.
    let elsewhere = "http://127.0.0.1:1";
    client
        .send(with_credential(
            request(Method::GET, server.url("/").as_str()),
            elsewhere,
        ))
        .await
        .unwrap();
    // No origin: never attached.
    let mut unbound = with_credential(request(Method::GET, server.url("/").as_str()), "");
    unbound.credential_origin = None;
    client.send(unbound).await.unwrap();

    let keys: Vec<Option<String>> = server
        .requests()
        .iter()
        .map(|r| r.header("x-api-key").map(str::to_owned))
        .collect();
    assert_eq!(
        keys,
        vec![Some("k-123".into()), Some("k-123".into()), None, None]
    );
}

#[tokio::test]
async fn redirect_methods_follow_browsers() {
    // (status, method, expected method on the second hop, body kept)
    let cases = [
        (303, Method::POST, "GET", false),
        (303, Method::PUT, "GET", false),
        (301, Method::POST, "GET", false),
        (302, Method::POST, "GET", false),
        (302, Method::PUT, "PUT", true),
        (307, Method::POST, "POST", true),
        (308, Method::PATCH, "PATCH", true),
    ];
    for (status, method, expect_method, kept) in cases {
        let server = FakeServer::start(vec![
            Reply::redirect(status, "/second"),
            Reply::text(200, "ok"),
        ])
        .await
        .unwrap();
        let mut req = request(method.clone(), server.url("/first").as_str());
        req.headers = vec![("Content-Type".into(), "text/plain".into())];
        req.body = Some(Bytes::from_static(b"data"));
        client().send(req).await.unwrap();
        let second = &server.requests()[1];
        assert_eq!(second.target, "/second");
        assert_eq!(second.method, expect_method, "{status} {method}");
        assert_eq!(second.body.is_empty(), !kept, "{status} {method}");
        assert_eq!(
            second.header("content-type").is_some(),
            kept,
            "{status} {method}"
        );
    }
}

#[tokio::test]
async fn redirects_are_capped() {
    let server = FakeServer::start(vec![Reply::redirect(302, "/again")])
        .await
        .unwrap();
    let err = client()
        .send(request(Method::GET, server.url("/").as_str()))
        .await
        .unwrap_err();
    assert_eq!(err, OutboundError::Redirect("more than 5 redirects".into()));
    assert_eq!(server.requests().len(), 6);

    let bad = FakeServer::start(vec![Reply::redirect(302, "http://[zz/")])
        .await
        .unwrap();
    let err = client()
        .send(request(Method::GET, bad.url("/").as_str()))
        .await
        .unwrap_err();
    assert!(matches!(err, OutboundError::Redirect(_)), "{err}");

    let scheme = FakeServer::start(vec![Reply::redirect(302, "file:///etc/passwd")])
        .await
        .unwrap();
    let err = client()
        .send(request(Method::GET, scheme.url("/").as_str()))
        .await
        .unwrap_err();
    assert!(matches!(err, OutboundError::InvalidUrl(_)), "{err}");
}

#[tokio::test]
async fn trusted_requests_skip_the_address_guard_but_not_the_origin() {
    let strict = client_with(OutboundConfig::default());
    let other = FakeServer::start(vec![Reply::text(200, "other")])
        .await
        .unwrap();
    let server = FakeServer::start(vec![
        Reply::text(200, "model"),
        Reply::redirect(302, "/same-origin"),
        Reply::text(200, "same"),
        Reply::redirect(302, other.url("/").as_str()),
    ])
    .await
    .unwrap();
    let url = server.url("/v1/chat");

    let err = strict
        .send(request(Method::POST, url.as_str()))
        .await
        .unwrap_err();
    assert!(matches!(err, OutboundError::Blocked(_)), "{err}");

    let mut trusted = request(Method::POST, url.as_str());
    trusted.trusted = true;
    assert_eq!(
        &strict.send(trusted.clone()).await.unwrap().body[..],
        b"model"
    );
    assert_eq!(
        &strict.send(trusted.clone()).await.unwrap().body[..],
        b"same"
    );
    let err = strict.send(trusted.clone()).await.unwrap_err();
    assert!(
        matches!(err, OutboundError::Redirect(ref m) if m.contains("another origin")),
        "{err}"
    );
    assert_eq!(other.connections(), 0);

    trusted.url = Url::parse("ftp://127.0.0.1/").unwrap();
    assert!(matches!(
        strict.send(trusted).await,
        Err(OutboundError::InvalidUrl(_))
    ));
}

#[tokio::test]
async fn statuses_are_returned_and_classified() {
    let server = FakeServer::start(vec![
        Reply::json(404, &json!({"error": "no such thing"})),
        Reply::text(503, "busy"),
        Reply::text(200, "done"),
        Reply::status(429).header("retry-after", "3"),
        Reply::status(429).header(
            "retry-after",
            &httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3600)),
        ),
    ])
    .await
    .unwrap();
    let client = client();
    let url = server.url("/");
    let mut results = Vec::new();
    for _ in 0..5 {
        let response = client
            .send(request(Method::GET, url.as_str()))
            .await
            .unwrap();
        results.push((
            response.status,
            classify_status(&response, &Redactor::default()),
        ));
    }
    assert_eq!(results[0].0, 404);
    assert_eq!(
        results[0].1,
        Some(ProviderError::permanent(
            "HTTP 404 Not Found: {\"error\":\"no such thing\"}"
        ))
    );
    assert_eq!(
        results[1].1,
        Some(ProviderError::retryable(
            "HTTP 503 Service Unavailable: busy"
        ))
    );
    assert_eq!(
        (results[2].0, results[2].1.clone()),
        (200, None),
        "5xx then success"
    );
    assert_eq!(
        results[3].1.as_ref().unwrap().retry_after(),
        Some(Duration::from_secs(3))
    );
    let by_date = results[4].1.as_ref().unwrap().retry_after().unwrap();
    assert!(
        by_date > Duration::from_secs(3500) && by_date <= Duration::from_secs(3600),
        "{by_date:?}"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let server = FakeServer::start(vec![Reply::hang()]).await.unwrap();
    let mut req = request(Method::GET, server.url("/").as_str());
    req.timeout = Duration::from_millis(300);
    assert_eq!(
        client().send(req).await.unwrap_err(),
        OutboundError::Timeout
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_slow_drip_body_hits_the_total_timeout() {
    let server = FakeServer::start(vec![
        Reply::text(200, &"x".repeat(100)).drip(1, Duration::from_millis(50)),
    ])
    .await
    .unwrap();
    let mut req = request(Method::GET, server.url("/").as_str());
    req.timeout = Duration::from_millis(400);
    assert_eq!(
        client().send(req).await.unwrap_err(),
        OutboundError::Timeout
    );
}

#[tokio::test]
async fn a_refused_connection_is_a_retryable_connect_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let err = client()
        .send(request(Method::GET, &format!("http://127.0.0.1:{port}/")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, OutboundError::Connect(ref m) if m.contains("refused")),
        "{err}"
    );
    assert!(ProviderError::from(err).is_retryable());
}

#[tokio::test]
async fn a_reset_mid_body_is_a_retryable_transport_error() {
    let server = FakeServer::start(vec![Reply::text(200, &"y".repeat(1000)).reset_after(10)])
        .await
        .unwrap();
    let err = client()
        .send(request(Method::GET, server.url("/").as_str()))
        .await
        .unwrap_err();
    assert!(matches!(err, OutboundError::Transport(_)), "{err}");
    assert!(ProviderError::from(err).is_retryable());
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_or_without_a_length() {
    let client = client_with(OutboundConfig {
        allow: parse_allowlist("127.0.0.1/32").unwrap(),
        max_response_bytes: 1024,
        ..OutboundConfig::default()
    });
    let server = FakeServer::start(vec![
        Reply::text(200, &"a".repeat(1024)),
        Reply::text(200, &"b".repeat(1025)),
        Reply::text(200, &"c".repeat(5000)).until_close(),
        Reply::text(200, &"d".repeat(1024)).until_close(),
    ])
    .await
    .unwrap();
    let url = server.url("/");
    let mut outcomes = Vec::new();
    for _ in 0..4 {
        outcomes.push(
            client
                .send(request(Method::GET, url.as_str()))
                .await
                .map(|r| r.body.len()),
        );
    }
    assert_eq!(
        outcomes,
        vec![
            Ok(1024),
            Err(OutboundError::TooLarge(1024)),
            Err(OutboundError::TooLarge(1024)),
            Ok(1024)
        ]
    );
    assert!(!ProviderError::from(OutboundError::TooLarge(1)).is_retryable());
}

#[tokio::test]
async fn header_injection_is_refused_before_connecting() {
    let server = FakeServer::start(vec![Reply::text(200, "ok")])
        .await
        .unwrap();
    let cases = [
        ("X-Evil", "a\r\nX-Injected: 1"),
        ("X-Evil\r\nX-Injected", "1"),
        ("Host", "evil.test"),
        ("Transfer-Encoding", "chunked"),
    ];
    for (name, value) in cases {
        let mut req = request(Method::GET, server.url("/").as_str());
        req.headers = vec![(name.into(), value.into())];
        let err = client().send(req).await.unwrap_err();
        assert!(
            matches!(err, OutboundError::InvalidHeader(_)),
            "{name:?}: {err}"
        );
    }
    let mut req = with_credential(
        request(Method::GET, server.url("/").as_str()),
        &server.origin(),
    );
    req.credential_headers = vec![("X-API-Key".into(), Secret::new("k\r\nX-Injected: 1"))];
    let err = client().send(req).await.unwrap_err();
    assert!(
        matches!(err, OutboundError::InvalidHeader(_)) && !err.to_string().contains("Injected"),
        "{err}"
    );
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn bad_urls_are_refused() {
    let client = client();
    for (url, fragment) in [
        ("ftp://127.0.0.1/", "scheme"),
        ("http://user:pw@127.0.0.1/", "credentials in the URL"),
    ] {
        let err = client.send(request(Method::GET, url)).await.unwrap_err();
        assert!(
            matches!(err, OutboundError::InvalidUrl(ref m) if m.contains(fragment)),
            "{url}: {err}"
        );
    }
    let mut req = with_credential(request(Method::GET, "http://127.0.0.1:9/"), "not a url");
    req.credential_origin = Some("not a url".into());
    assert!(matches!(
        client.send(req).await,
        Err(OutboundError::InvalidUrl(_))
    ));
}

#[tokio::test]
async fn a_connect_that_hangs_fails_at_the_connect_timeout() {
    // A listener that never accepts and whose accept queue is full: the kernel drops further
    // SYNs, so the next connect hangs until the client gives up.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    // Fill the queue until a connect no longer completes (two on Linux for a backlog of 1).
    let mut fillers = Vec::new();
    while let Ok(stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
        fillers.push(stream);
        assert!(fillers.len() < 64, "the accept queue never filled");
    }
    let client = client_with(OutboundConfig {
        allow: parse_allowlist("127.0.0.1/32").unwrap(),
        connect_timeout: Duration::from_millis(300),
        ..OutboundConfig::default()
    });
    let mut req = request(Method::GET, &format!("http://{addr}/"));
    req.timeout = Duration::from_secs(60);
    let err = client.send(req).await.unwrap_err();
    assert!(
        matches!(err, OutboundError::Connect(_)),
        "the connect timeout, not the 60 s budget: {err}"
    );
    drop(listener);
}

#[tokio::test]
async fn a_replaced_script_answers_from_the_next_request_on() {
    let server = FakeServer::start(vec![Reply::status(201)]).await.unwrap();
    let client = client();
    let status = |r: Result<OutboundResponse, OutboundError>| r.unwrap().status;
    let url = server.url("/");
    assert_eq!(
        status(client.send(request(Method::GET, url.as_str())).await),
        201
    );
    server.set_script(vec![Reply::status(202), Reply::status(203)]);
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(status(
            client.send(request(Method::GET, url.as_str())).await,
        ));
    }
    assert_eq!(
        seen,
        [202, 203, 203],
        "the new script, its last reply repeating"
    );
}
