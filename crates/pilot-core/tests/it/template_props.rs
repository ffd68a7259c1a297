//! Properties of the template language over arbitrary input: parsing and resolving never panic,
//! a parsed reference prints back to text that parses to the same reference, and a string
//! without `$` is always one literal.

use pilot_core::template::{self, Part, Scope};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Strings made mostly of the grammar's own characters, so the parser's deeper paths are hit
/// far more often than with uniformly random text.
fn templateish() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "${", "$${", "$", "{", "}", ".", "[", "]", "\"", "\\", " ", "steps", "input", "run",
        "plan", "id", "output", "0", "12", "a", "fetch", "é", "-", "_", "x",
    ]);
    prop::collection::vec(pieces, 0..24).prop_map(|parts| parts.concat())
}

/// Arbitrary JSON up to a few levels deep, with strings that often hold references.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        templateish().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((templateish(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

proptest! {
    #[test]
    fn parse_never_panics_on_any_string(text in any::<String>()) {
        let _ = template::parse(&text);
    }

    #[test]
    fn parse_never_panics_on_grammar_soup(text in templateish()) {
        if let Err(err) = template::parse(&text) {
            prop_assert!(err.position <= text.len());
            prop_assert!(text.is_char_boundary(err.position));
        }
    }

    #[test]
    fn references_print_back_to_themselves(text in templateish()) {
        if let Ok(parsed) = template::parse(&text) {
            for reference in parsed.references() {
                let printed = reference.to_string();
                let again = template::parse(&printed).map_err(|e| TestCaseError::fail(format!("{printed}: {e}")))?;
                prop_assert_eq!(again.parts, vec![Part::Ref(reference.clone())]);
            }
        }
    }

    #[test]
    fn text_without_dollar_is_one_literal(text in "[^$]{0,40}") {
        let parsed = template::parse(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        if text.is_empty() {
            prop_assert!(parsed.parts.is_empty());
        } else {
            prop_assert_eq!(parsed.parts, vec![Part::Literal(text)]);
        }
    }

    #[test]
    fn resolve_never_panics(params in json_value(), input in json_value(), output in json_value()) {
        let steps: [(&str, Option<&Value>); 3] =
            [("fetch", Some(&output)), ("a", None), ("x", Some(&input))];
        let scope = Scope { input: &input, run_id: "r", plan_id: None, steps: &steps };
        let _ = template::resolve(&params, &scope);
        let _ = template::references(&params);
        let wrapped = json!({"p": params});
        let _ = template::resolve(&wrapped, &scope);
    }

    #[test]
    fn values_without_references_resolve_to_themselves(params in json_value()) {
        let text = params.to_string();
        prop_assume!(!text.contains("${"));
        let input = Value::Null;
        let scope = Scope { input: &input, run_id: "r", plan_id: None, steps: &[] };
        let resolved = template::resolve(&params, &scope).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(resolved, params);
    }
}
