//! docs/RELIABILITY.md promise 8 through the engine: a provider that echoes the caller's secrets, in
//! every encoding, leaves none of them in the stored output, the log previews, messages or
//! errors, the run's error, or what `/api/execute-step` answers.

// Marks the whole file as test code, so helpers outside #[test] functions may unwrap.

use crate::support::{Answer, Harness, Scripted, step};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use pilot_core::{Credential, CredentialKind, RunStatus, Secret, UserId};
use pilot_engine::EngineConfig;
use pilot_registry::{ProviderError, ProviderOutput};
use serde_json::{Value, json};

/// The bearer secret: `/`, `+`, space, quote, tilde and a non-ASCII letter make every encoding
/// differ from the raw value.
const SECRET: &str = "sk-Live/9+z w\"ü~Q";
/// The basic credential (`user:password`) and its password.
const BASIC: &str = "bob:pa55/w0rd+!";
const PASSWORD: &str = "pa55/w0rd+!";

/// Every form in which a secret must not survive.
fn encodings(secret: &str) -> Vec<(String, String)> {
    let b = secret.as_bytes();
    let json = Value::String(secret.to_owned()).to_string();
    vec![
        ("raw".into(), secret.to_owned()),
        ("base64".into(), STANDARD.encode(b)),
        ("base64 unpadded".into(), STANDARD_NO_PAD.encode(b)),
        ("base64url".into(), URL_SAFE.encode(b)),
        ("base64url unpadded".into(), URL_SAFE_NO_PAD.encode(b)),
        ("hex".into(), hex::encode(b)),
        ("HEX".into(), hex::encode_upper(b)),
        (
            "percent".into(),
            utf8_percent_encode(secret, NON_ALPHANUMERIC).to_string(),
        ),
        ("json-escaped".into(), json[1..json.len() - 1].to_owned()),
    ]
}

/// All the forms to look for: both credentials, the password alone and the Basic header.
fn forbidden() -> Vec<(String, String)> {
    let mut all = encodings(SECRET);
    all.extend(encodings(BASIC));
    all.extend(encodings(PASSWORD));
    all.push(("basic header".into(), STANDARD.encode(BASIC)));
    all
}

/// What the echoing provider answers: every encoding of every secret it received, as values,
/// as keys, inside longer strings and inside a base64 blob.
fn echo(secrets: &[String]) -> Value {
    let mut out = serde_json::Map::new();
    for (i, secret) in secrets.iter().enumerate() {
        for (name, encoded) in encodings(secret) {
            out.insert(format!("{i} {name}"), json!(encoded));
            out.insert(encoded.clone(), json!(format!("key {name}")));
            out.insert(
                format!("{i} {name} nested"),
                json!([{"header": format!("Bearer {encoded}!")}]),
            );
        }
        for prefix in ["", "x", "xy"] {
            let blob = STANDARD.encode(format!("{prefix}{{\"token\":\"{secret}\",\"more\":1}}"));
            out.insert(format!("{i} blob {prefix}"), json!(blob));
        }
        out.insert(
            format!("{i} basic header"),
            json!(format!("Basic {}", STANDARD.encode(secret))),
        );
    }
    Value::Object(out)
}

fn harness() -> Harness {
    let h = Harness::with(EngineConfig::default(), |registry, script| {
        let mut vault = Scripted::new("vault", script);
        vault.credential_types = vec![CredentialKind::Bearer, CredentialKind::Basic];
        vault.echo = echo;
        registry.register(vault).unwrap();
    });
    let user = UserId::from("alice");
    for (kind, secret) in [
        (CredentialKind::Bearer, SECRET),
        (CredentialKind::Basic, BASIC),
    ] {
        h.store.add_credential(
            &user,
            Credential {
                provider: "vault".into(),
                kind,
                secret: Secret::new(secret),
                origin: None,
                integration: None,
                header_name: None,
            },
        );
    }
    h
}

/// Every string of `value`, keys included, plus its serialised form.
fn texts_of(value: &Value, out: &mut Vec<String>) {
    out.push(value.to_string());
    let mut pending = vec![value];
    while let Some(v) = pending.pop() {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(items) => pending.extend(items),
            Value::Object(map) => {
                out.extend(map.keys().cloned());
                pending.extend(map.values());
            }
            _ => {}
        }
    }
}

fn assert_clean(texts: &[String]) {
    for text in texts {
        for (name, encoded) in forbidden() {
            assert!(
                !text.contains(&encoded),
                "{name} form {encoded:?} leaked in {text:?}"
            );
        }
    }
}

/// Everything the store holds about runs: log rows, step states, run errors.
fn stored_texts(h: &Harness, run_id: &pilot_core::RunId) -> Vec<String> {
    let mut texts = Vec::new();
    for log in h.logs() {
        texts.extend(log.message);
        texts.extend(log.error);
        texts.extend(log.output_preview);
    }
    let run = h.store.run(run_id).unwrap();
    texts.extend(run.error);
    for state in run.states {
        texts.extend(state.error);
        if let Some(output) = &state.output {
            texts_of(output, &mut texts);
        }
    }
    texts
}

#[tokio::test(start_paused = true)]
async fn an_echoed_secret_is_redacted_everywhere_in_every_encoding() {
    let h = harness();
    let leak = format!("upstream rejected {SECRET} ({})", hex::encode(SECRET));
    h.script
        .push([Answer::Err(ProviderError::retryable(leak)), Answer::Echo]);
    let snap = h.start(vec![step("echo", "vault", "call", json!({}))], json!({}));
    let run_id = snap.run_id.clone();
    let outcome = h.engine.execute_plan(snap).await.unwrap();

    assert_eq!(outcome.status, RunStatus::Succeeded);
    let calls = h.script.calls();
    assert_eq!(
        calls[0].secrets,
        vec![SECRET, BASIC],
        "the provider did get the secrets"
    );

    let mut texts = stored_texts(&h, &run_id);
    for state in &outcome.states {
        if let Some(output) = &state.output {
            texts_of(output, &mut texts);
        }
    }
    assert_clean(&texts);

    // Redaction replaced, it did not drop: every echoed field is still there.
    let output = outcome.states[0].output.clone().unwrap();
    let echoed = echo(&[SECRET.to_owned(), BASIC.to_owned()]);
    assert_eq!(
        output.as_object().unwrap().len(),
        echoed.as_object().unwrap().len()
    );
    assert_eq!(output["0 raw"], json!("[redacted]"));
    assert_eq!(
        output["0 hex nested"],
        json!([{"header": "Bearer [redacted]!"}])
    );
    // A secret inside a base64 blob, at each alignment, loses its stable middle.
    for prefix in ["", "x", "xy"] {
        let blob = output[format!("0 blob {prefix}")].as_str().unwrap();
        assert!(blob.contains("[redacted]"), "{prefix:?}: {blob}");
    }
    let logs = h.logs();
    assert_eq!(
        logs[0].error.as_deref(),
        Some("upstream rejected [redacted] ([redacted])")
    );
    assert!(
        logs[1]
            .output_preview
            .as_deref()
            .unwrap()
            .contains("[redacted]")
    );
}

#[tokio::test]
async fn a_secret_in_an_error_is_redacted_from_the_step_the_log_and_the_run() {
    let h = harness();
    let message = format!("bad credentials: Basic {}", STANDARD.encode(BASIC));
    h.script
        .push([Answer::Err(ProviderError::permanent(message))]);
    let snap = h.start(vec![step("echo", "vault", "call", json!({}))], json!({}));
    let run_id = snap.run_id.clone();
    let outcome = h.engine.execute_plan(snap).await.unwrap();

    assert_eq!(outcome.status, RunStatus::Failed);
    assert_eq!(
        outcome.error.as_deref(),
        Some("step 'echo' failed: bad credentials: Basic [redacted]")
    );
    let mut texts = stored_texts(&h, &run_id);
    texts.extend(outcome.error);
    assert_clean(&texts);
}

#[tokio::test]
async fn execute_step_answers_with_redacted_output_message_and_metadata() {
    let h = harness();
    h.script.push([Answer::Full(ProviderOutput {
        output: json!({"echo": SECRET}),
        message: Some(format!("sent with {}", URL_SAFE_NO_PAD.encode(SECRET))),
        metadata: json!({"request_headers": {"authorization": format!("Bearer {SECRET}")}}),
    })]);
    let snap = h.start(vec![step("echo", "vault", "call", json!({}))], json!({}));
    let result = h.engine.execute_step(snap).await.unwrap();

    assert!(result.success);
    assert_eq!(result.output, json!({"echo": "[redacted]"}));
    assert_eq!(result.message.as_deref(), Some("sent with [redacted]"));
    assert_eq!(
        result.metadata,
        json!({"request_headers": {"authorization": "Bearer [redacted]"}})
    );
}

/// A later step without credentials of its own that re-assembles a secret an earlier step's
/// server echoed in a disguised form (here reversed) stores nothing of it: every step's output,
/// preview and error is redacted with every secret the run used.
#[tokio::test]
async fn a_later_step_that_reassembles_a_secret_stores_nothing_of_it() {
    let h = harness();
    let reversed: String = SECRET.chars().rev().collect();
    h.script.push([
        Answer::Ok(json!({"echo": reversed})),
        Answer::Ok(json!({"joined": SECRET, "halves": [&SECRET[..6], &SECRET[6..]]})),
        Answer::Err(ProviderError::permanent(format!("rejected {SECRET}"))),
    ]);
    let mut last = crate::support::scripted("fails", json!({}));
    last.continue_on_error = true;
    let snap = h.start(
        vec![
            step("echo", "vault", "call", json!({})),
            crate::support::scripted("reassemble", json!({})),
            last,
        ],
        json!({}),
    );
    let run_id = snap.run_id.clone();
    let outcome = h.engine.execute_plan(snap).await.unwrap();
    assert_eq!(outcome.status, RunStatus::Succeeded);
    assert_eq!(
        outcome.states[1].output,
        Some(json!({"joined": "[redacted]", "halves": [&SECRET[..6], &SECRET[6..]]}))
    );
    assert_eq!(
        outcome.states[2].error.as_deref(),
        Some("rejected [redacted]")
    );
    assert_clean(&stored_texts(&h, &run_id));
}

/// The same after a takeover: the step that loaded the credential finished under another
/// executor, and the one resuming the run still redacts the later steps with it.
#[tokio::test]
async fn a_resumed_run_redacts_later_steps_with_the_secrets_of_finished_ones() {
    let h = harness();
    h.script.push([Answer::Ok(json!({"joined": SECRET}))]);
    let steps = vec![
        step("echo", "vault", "call", json!({})),
        crate::support::scripted("reassemble", json!({})),
    ];
    let mut done = pilot_core::StepState::pending("echo");
    done.status = pilot_core::StepStatus::Succeeded;
    done.output = Some(json!({"echo": "disguised"}));
    let snap = crate::support::snapshot(steps, json!({}), vec![done]);
    h.store.insert_run(&snap);
    let run_id = snap.run_id.clone();
    let outcome = h.engine.execute_plan(snap).await.unwrap();
    assert_eq!(outcome.status, RunStatus::Succeeded);
    assert_eq!(h.script.call_steps(), vec!["reassemble"]);
    assert_eq!(
        outcome.states[1].output,
        Some(json!({"joined": "[redacted]"}))
    );
    assert_clean(&stored_texts(&h, &run_id));
}
