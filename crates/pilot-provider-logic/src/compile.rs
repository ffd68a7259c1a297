//! From expression text to a compiled filter: length check, parsing, the bounding rewrite,
//! and compilation against the wrapped standard library (only the definitions the expression
//! reaches, which keeps a cached filter small: the whole library compiles to about 100 KiB).

use std::collections::BTreeSet;
use std::sync::LazyLock;

use jaq_core::Compiler;
use jaq_core::compile::Undefined;
use jaq_core::load::parse::{Def, Term};
use jaq_core::load::{Arena, File, Lexer, Loader, Parser, lex, parse};

use crate::budget::Pilot;
use crate::natives::{natives, wrapper_source};
use crate::rewrite::{Rewrite, called_names};
use crate::{JqError, JqLimits};

/// A compiled expression, shareable between evaluation threads.
pub(crate) type Filter = jaq_core::Filter<Pilot>;

/// How deeply a user expression may nest after parsing. jaq's compiler and interpreter recurse
/// once per level (about 16 KiB of stack per level in a debug build), so this keeps both well
/// inside the evaluation thread's stack.
const MAX_EXPRESSION_DEPTH: usize = 400;

/// The name the user's expression is compiled under.
const MAIN: &str = "_pilot_main";

/// The library: our wrappers, then jaq's definitions rewritten, each with the names it calls.
struct Prelude {
    defs: Vec<(Def<&'static str>, BTreeSet<&'static str>)>,
}

static WRAPPERS: LazyLock<String> = LazyLock::new(wrapper_source);

static PRELUDE: LazyLock<Result<Prelude, String>> = LazyLock::new(build_prelude);

fn build_prelude() -> Result<Prelude, String> {
    let wrappers = jaq_core::load::parse(WRAPPERS.as_str(), |p| p.defs())
        .ok_or("the generated wrapper definitions do not parse")?;
    let rewrite = Rewrite::library();
    let library = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs());
    let mut defs = wrappers;
    for def in library {
        defs.push(rewrite.def(def).map_err(|e| e.to_string())?);
    }
    let defs = defs
        .into_iter()
        .map(|def| {
            let mut names = BTreeSet::new();
            called_names(&def.body, &mut names);
            (def, names)
        })
        .collect();
    Ok(Prelude { defs })
}

impl Prelude {
    /// The definitions reachable from `roots`, in library order. A definition can only call
    /// those before it, so one backward pass finds them all (matching by name only, which may
    /// keep a few more than needed).
    fn reachable<'s>(&self, mut needed: BTreeSet<&'s str>) -> Vec<Def<&'s str>> {
        let mut keep = vec![false; self.defs.len()];
        for (i, (def, calls)) in self.defs.iter().enumerate().rev() {
            if needed.contains(def.name) {
                keep[i] = true;
                needed.extend(calls.iter().copied());
            }
        }
        self.defs
            .iter()
            .zip(keep)
            .filter(|(_, keep)| *keep)
            .map(|((def, _), _)| def.clone())
            .collect()
    }
}

/// Compiles `expr`. Parsing and compiling recurse once per nesting level, so this runs on an
/// evaluation thread (see `pool.rs`), never on the caller's.
pub(crate) fn compile(expr: &str, limits: &JqLimits) -> Result<Filter, JqError> {
    if expr.len() > limits.max_expression_bytes {
        return Err(JqError::Compile(format!(
            "the expression is longer than {} bytes",
            limits.max_expression_bytes
        )));
    }
    let prelude = PRELUDE.as_ref().map_err(|e| JqError::Internal(e.clone()))?;
    let tokens = Lexer::new(expr)
        .lex()
        .map_err(|errors| lex_error(expr, &errors))?;
    let term: Term<&str> = Parser::new(&tokens)
        .parse(|p| p.term())
        .map_err(|errors| parse_error(expr, &errors))?;
    let term = Rewrite::user(MAX_EXPRESSION_DEPTH)
        .term(term)
        .map_err(|e| JqError::Compile(e.to_string()))?;

    let mut roots = BTreeSet::new();
    called_names(&term, &mut roots);
    let mut defs = prelude.reachable(roots);
    defs.push(Def {
        name: MAIN,
        args: Vec::new(),
        body: term,
    });

    let arena = Arena::default();
    let modules = Loader::new(defs)
        .load(
            &arena,
            File {
                code: MAIN,
                path: (),
            },
        )
        .map_err(|_| JqError::Internal("the rewritten expression does not load".into()))?;
    Compiler::default()
        .with_funs(natives())
        .compile(modules)
        .map_err(|errors| {
            let undefined: Vec<_> = errors.iter().flat_map(|(_, errs)| errs.iter()).collect();
            match undefined.first() {
                Some((name, kind)) => undefined_error(expr, name, kind),
                None => JqError::Compile("the expression does not compile".into()),
            }
        })
}

/// Where `part` (a slice of `whole`) starts, as "line L, column C" (1-based, in characters).
fn position(whole: &str, part: &str) -> String {
    let start = part.as_ptr().addr().wrapping_sub(whole.as_ptr().addr());
    if start > whole.len() || !whole.is_char_boundary(start) {
        return "the end".into();
    }
    let before = &whole[..start];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}")
}

/// A short, printable excerpt of source text for an error message.
fn snippet(text: &str) -> String {
    let mut out: String = text.chars().take(20).collect();
    if text.chars().nth(20).is_some() {
        out.push('…');
    }
    out
}

fn lex_error(expr: &str, errors: &[lex::Error<&str>]) -> JqError {
    let Some((expected, rest)) = errors.first() else {
        return JqError::Compile("the expression does not parse".into());
    };
    let what = match expected {
        lex::Expect::Digit => "a digit",
        lex::Expect::Ident => "an identifier",
        lex::Expect::Delim(_) => "a closing delimiter",
        lex::Expect::Escape => "a string escape sequence",
        lex::Expect::Unicode => "a 4-digit hexadecimal code point",
        _ => "a token",
    };
    JqError::Compile(format!(
        "syntax error at {}: expected {what} at `{}`",
        position(expr, rest),
        snippet(rest)
    ))
}

fn parse_error(expr: &str, errors: &[parse::TError<'_, &str>]) -> JqError {
    let Some((expected, found)) = errors.first() else {
        return JqError::Compile("the expression does not parse".into());
    };
    let expected = expected.as_str();
    JqError::Compile(match found {
        Some(lex::Token(text, _)) => format!(
            "syntax error at {}: expected {expected}, found `{}`",
            position(expr, text),
            snippet(text)
        ),
        None => format!("syntax error at the end: expected {expected}"),
    })
}

/// Things a jq user might reach for that deliberately do not exist here.
const UNAVAILABLE: &[&str] = &[
    "$ENV",
    "env",
    "input",
    "inputs",
    "input_filename",
    "input_line_number",
    "localtime",
    "strflocaltime",
    "get_search_list",
    "$__prog_args",
];

fn undefined_error(expr: &str, name: &str, kind: &Undefined) -> JqError {
    let what = match kind {
        Undefined::Var => "variable",
        Undefined::Mod => "module",
        Undefined::Label => "label",
        Undefined::Filter(arity) => {
            return JqError::Compile(format!(
                "undefined filter `{name}/{arity}`{}{}",
                located(expr, name),
                hint(name)
            ));
        }
        _ => "symbol",
    };
    JqError::Compile(format!(
        "undefined {what} `{name}`{}{}",
        located(expr, name),
        hint(name)
    ))
}

fn located(expr: &str, name: &str) -> String {
    let start = name.as_ptr().addr().wrapping_sub(expr.as_ptr().addr());
    if start <= expr.len() {
        format!(" at {}", position(expr, name))
    } else {
        String::new()
    }
}

fn hint(name: &str) -> &'static str {
    if UNAVAILABLE.contains(&name) {
        " (expressions here have no access to the server's environment, files, time zone or input streams)"
    } else {
        ""
    }
}
