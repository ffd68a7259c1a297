//! jq here has no window on the server: the environment, files, the time zone, input streams
//! and process control are all out of reach. Each attempt is a compile error that says so (or,
//! for `halt`, a runtime error), never a value.

use pilot_provider_logic::{JqEngine, JqError};
use serde_json::Value;

#[tokio::test]
async fn the_environment_is_out_of_reach() {
    let engine = JqEngine::default();
    let no_access = "no access to the server's environment";
    let cases = [
        ("env", no_access),
        ("env.HOME", no_access),
        ("env | keys", no_access),
        ("$ENV", no_access),
        ("$ENV.PATH", no_access),
        ("$ENV | length", no_access),
        ("input_filename", no_access),
        ("input", no_access),
        ("inputs", no_access),
        ("[inputs]", no_access),
        ("input_line_number", no_access),
        ("localtime", no_access),
        ("0 | strflocaltime(\"%Z\")", no_access),
        ("get_search_list", no_access),
        ("$__prog_args", no_access),
        ("tobytes", "undefined filter `tobytes/0`"),
        ("import \"env\" as e; e::x", "syntax error"),
        ("include \"/etc/passwd\"; .", "syntax error"),
        ("import \"/etc/passwd\" as $p; $p", "syntax error"),
        ("x::env", "undefined module"),
    ];
    for (expr, part) in cases {
        match engine.all(expr, Value::Null).await {
            Err(JqError::Compile(msg)) => assert!(msg.contains(part), "{expr}: {msg}"),
            other => panic!("{expr}: {other:?}"),
        }
        assert!(engine.check(expr).is_err(), "{expr}");
    }
}

#[tokio::test]
async fn process_control_and_logging_are_inert() {
    let engine = JqEngine::default();
    for expr in ["halt", "halt_error", "\"bye\" | halt_error(1)", "halt(0)"] {
        match engine.all(expr, Value::Null).await {
            Err(JqError::Runtime(msg)) => assert!(msg.contains("not supported"), "{expr}: {msg}"),
            other => panic!("{expr}: {other:?}"),
        }
    }
    // `debug` and `stderr` pass their input on and log nothing.
    for expr in ["debug", "stderr", "debug(\"message\")"] {
        assert_eq!(
            engine.all(expr, Value::from(5)).await,
            Ok(vec![Value::from(5)]),
            "{expr}"
        );
    }
}

#[tokio::test]
async fn the_word_env_is_only_data() {
    let engine = JqEngine::default();
    let input = serde_json::json!({"env": "prod", "$ENV": 1});
    assert_eq!(
        engine.single(".env", input.clone()).await,
        Ok(Value::from("prod"))
    );
    assert_eq!(
        engine.single(".[\"$ENV\"]", input.clone()).await,
        Ok(Value::from(1))
    );
    assert_eq!(
        engine.single("\"$ENV \\(.env)\"", input).await,
        Ok(Value::from("$ENV prod"))
    );
}
