//! The native filters an expression can call, and the jq prelude that wraps them.
//!
//! Every native of jaq's standard library is kept except those that reach outside the
//! evaluation: `env` (the process environment), `localtime`/`strflocaltime` (the server's time
//! zone, read from `TZ` and `/etc/localtime`), `input`/`inputs` (never added), `tobytes` (jaq
//! only, and it expands shared values), and the logging behind `debug`/`stderr` (replaced by
//! silent versions: user data never reaches the server's logs). `halt` fails instead of ending
//! the process. `tojson` and `fromjson` are replaced by bounded versions.
//!
//! Natives that build values in proportion to their input are wrapped by a jq definition of
//! the same name that charges the budget for their output (`_pilot_charge`), and those whose
//! running time grows faster than their input (substring and regex search, sorting) also
//! charge an estimate of that time before they run. The wrappers are generated jq source:
//!
//! ```jq
//! def _pilot_w_explode: explode;                              # still the native here
//! def explode: _pilot_cost_bytes(16) | _pilot_w_explode | _pilot_charge;
//! ```
//!
//! Names starting with `_pilot` are reserved: user expressions cannot define or call them.

use std::fmt::Write as _;

use jaq_core::box_iter::box_once;
use jaq_core::native::{Fun, run, v};
use jaq_core::{Bind, Cv, Error, Exn, RunPtr, ValXs};
use jaq_json::{Num, Val};
use jaq_std::ValT as _;

use crate::budget::{Budget, MAX_INTEGER_BITS, Pilot, Stop};
use crate::convert::{bounded_json, json_depth};

/// Natives of jaq's libraries that are left out.
const EXCLUDED: &[&str] = &[
    "env",
    "localtime",
    "strflocaltime",
    "tobytes",
    "tojson",
    "fromjson",
    "halt",
    "debug_empty",
    "stderr_empty",
];

/// How a native of jaq's libraries is wrapped: the jq filters run before it (estimating its
/// time or memory), and whether its outputs are charged.
struct Wrap {
    name: &'static str,
    before: &'static str,
    charge_output: bool,
}

const fn wrap(name: &'static str, before: &'static str, charge_output: bool) -> Wrap {
    Wrap {
        name,
        before,
        charge_output,
    }
}

const WRAPPED: &[Wrap] = &[
    wrap("path", "", true),
    wrap("path_value", "", true),
    wrap("range", "", true),
    wrap("keys_unsorted", "", true),
    wrap("key_values", "", true),
    wrap("explode", "_pilot_cost_bytes(16)", true),
    wrap("implode", "", true),
    wrap("ascii_downcase", "", true),
    wrap("ascii_upcase", "", true),
    wrap("reverse", "", true),
    wrap("sort", "_pilot_cost_sort", true),
    wrap("sort_by", "_pilot_cost_sort", true),
    wrap("group_by", "_pilot_cost_sort", true),
    wrap("min_by_or_empty", "_pilot_cost_sort", false),
    wrap("max_by_or_empty", "_pilot_cost_sort", false),
    wrap("escape_sh", "", true),
    wrap("escape_html", "", true),
    wrap("unescape_html", "", true),
    wrap("encode_uri", "", true),
    wrap("decode_uri", "", true),
    wrap("encode_base64", "", true),
    wrap("decode_base64", "", true),
    wrap("contains", "_pilot_cost_pairs($a0)", false),
    wrap(
        "indices",
        "_pilot_cost_pairs($a0) | _pilot_cost_bytes(16)",
        true,
    ),
    wrap(
        "matches",
        "_pilot_cost_pairs($a0) | _pilot_cost_bytes(64)",
        true,
    ),
    wrap(
        "split_matches",
        "_pilot_cost_pairs($a0) | _pilot_cost_bytes(64)",
        true,
    ),
    wrap(
        "split_",
        "_pilot_cost_pairs($a0) | _pilot_cost_bytes(64)",
        true,
    ),
    wrap("todateiso8601", "", true),
    wrap("strftime", "", true),
];

/// Every native an expression can reach: ours first, then jaq's minus [`EXCLUDED`].
pub(crate) fn natives() -> Vec<Fun<Pilot>> {
    let ours = [
        native("_pilot_charge", 0, charge),
        native("_pilot_add", 2, add),
        native("_pilot_sub", 2, sub),
        native("_pilot_mul", 2, mul),
        native("_pilot_div", 2, div),
        native("_pilot_tostring", 0, tostring),
        native("_pilot_cost_pairs", 1, cost_pairs),
        native("_pilot_cost_sort", 0, cost_sort),
        native("_pilot_cost_bytes", 1, cost_bytes),
        native("tojson", 0, tojson),
        native("fromjson", 0, fromjson),
        native("halt", 1, halt),
        native("debug_empty", 0, nothing),
        native("stderr_empty", 0, nothing),
    ];
    let theirs = jaq_core::funs::<Pilot>()
        .chain(jaq_std::funs::<Pilot>())
        .chain(jaq_json::funs::<Pilot>())
        .filter(|(name, _, _)| !EXCLUDED.contains(name));
    ours.into_iter().chain(theirs).collect()
}

fn native(name: &'static str, arity: usize, f: RunPtr<Pilot>) -> Fun<Pilot> {
    run::<Pilot>((name, v(arity), f))
}

/// The jq source of the wrapper definitions, generated from the natives' signatures.
pub(crate) fn wrapper_source() -> String {
    let mut source = String::new();
    for (name, binds, _) in natives() {
        let Some(wrap) = WRAPPED.iter().find(|w| w.name == name) else {
            continue;
        };
        let params: Vec<String> = binds
            .iter()
            .enumerate()
            .map(|(i, bind)| match bind {
                Bind::Var(()) => format!("$a{i}"),
                Bind::Fun(()) => format!("f{i}"),
            })
            .collect();
        let params = if params.is_empty() {
            String::new()
        } else {
            format!("({})", params.join("; "))
        };
        let before = if wrap.before.is_empty() {
            String::new()
        } else {
            format!("{} | ", wrap.before)
        };
        let after = if wrap.charge_output {
            " | _pilot_charge"
        } else {
            ""
        };
        // Writing to a String cannot fail.
        let _ = writeln!(source, "def _pilot_w_{name}{params}: {name}{params};");
        let _ = writeln!(
            source,
            "def {name}{params}: {before}_pilot_w_{name}{params}{after};"
        );
    }
    source
}

fn budget<'a>(cv: &Cv<'a, Pilot>) -> &'a Budget {
    cv.0.data().budget
}

/// `_pilot_charge`: charges for its input as a newly built value and passes it on. The
/// rewritten expression sends through it every value that is stored into an array, an object
/// or an updated path, and wrapped natives send their outputs through it.
fn charge(cv: Cv<'_, Pilot>) -> ValXs<'_, Val> {
    budget(&cv).charge(&cv.1);
    box_once(Ok(cv.1))
}

fn nothing(_: Cv<'_, Pilot>) -> ValXs<'_, Val> {
    Box::new(std::iter::empty())
}

fn halt(_: Cv<'_, Pilot>) -> ValXs<'_, Val> {
    box_once(Err(Exn::from(Error::str(
        "halt and halt_error are not supported here; use error(...)",
    ))))
}

/// Takes the two operands of a binary native, dropping the input first so that an operand
/// that was the input (`. + $x`) is not shared only because of it, and can grow in place.
fn operands(mut cv: Cv<'_, Pilot>) -> (&Budget, Val, Val) {
    let budget = budget(&cv);
    let right = cv.0.pop_var();
    let left = cv.0.pop_var();
    drop(cv);
    (budget, left, right)
}

fn result<'a>(value: Result<Val, Error<Val>>) -> ValXs<'a, Val> {
    box_once(value.map_err(Exn::from))
}

/// `l + r`, charging for what the concatenation copies.
fn add(cv: Cv<'_, Pilot>) -> ValXs<'_, Val> {
    let (budget, left, right) = operands(cv);
    match (&left, &right) {
        (Val::TStr(l) | Val::BStr(l), Val::TStr(r) | Val::BStr(r)) => {
            let total = l.len().saturating_add(r.len());
            budget.check_string(total);
            budget.charge_string(if l.is_unique() { r.len() } else { total });
        }
        (Val::Arr(_), Val::Arr(_)) | (Val::Obj(_), Val::Obj(_)) => {
            budget.charge_copy(&left);
            budget.charge(&right);
        }
        (Val::Num(l), Val::Num(r)) => check_integers(budget, l, r, false),
        _ => {}
    }
    result(left + right)
}

/// `l - r`, charging for copying `l` when it is shared.
fn sub(cv: Cv<'_, Pilot>) -> ValXs<'_, Val> {
    let (budget, left, right) = operands(cv);
    match (&left, &right) {
        (Val::Arr(_), Val::Arr(r)) => {
            budget.charge_copy(&left);
            budget.step(r.len() as u64);
        }
        (Val::Num(l), Val::Num(r)) => check_integers(budget, l, r, false),
        _ => {}
    }
    result(left - right)
}

/// `l * r`: repeats strings only up to the string limit, merges objects charging for the
/// right side, and keeps integers within [`MAX_INTEGER_BITS`].
fn mul(cv: Cv<'_, Pilot>) -> ValXs<'_, Val> {
    let (budget, left, right) = operands(cv);
    match (&left, &right) {
        (Val::TStr(s) | Val::BStr(s), Val::Num(n)) | (Val::Num(n), Val::TStr(s) | Val::BStr(s)) => {
            let times = match n {
                Num::Int(i) => usize::try_from(*i).unwrap_or(0),
                Num::BigInt(_) => usize::MAX,
                _ => 0,
            };
            let total = s.len().saturating_mul(times);
            budget.check_string(total);
            budget.charge_string(total);
        }
        (Val::Obj(_), Val::Obj(_)) => {
            budget.charge_copy(&left);
            budget.charge(&right);
        }
        (Val::Num(l), Val::Num(r)) => check_integers(budget, l, r, true),
        _ => {}
    }
    result(left * right)
}

/// `l / r`: splitting a string makes one value per piece, so the pieces are estimated and
/// charged before they are built.
fn div(cv: Cv<'_, Pilot>) -> ValXs<'_, Val> {
    let (budget, left, right) = operands(cv);
    if let (Val::TStr(s) | Val::BStr(s), Val::TStr(sep) | Val::BStr(sep)) = (&left, &right) {
        let pieces = s.len() / sep.len().max(1) + 1;
        budget.alloc(64 * pieces as u64);
        budget.step(1 + s.len() as u64 / 64);
    }
    result(left / right)
}

/// Stops when adding (or multiplying) two integers could give one wider than allowed.
fn check_integers(budget: &Budget, left: &Num, right: &Num, multiply: bool) {
    let bits = |n: &Num| match n {
        Num::BigInt(i) => i.bits(),
        _ => 64,
    };
    let (l, r) = (bits(left), bits(right));
    let widest = if multiply { l + r } else { l.max(r) + 1 };
    if widest > MAX_INTEGER_BITS {
        budget.stop(Stop::NumberSize);
    }
    budget.step(widest / 256);
}

/// `_pilot_tostring`: strings unchanged, anything else as JSON within the string limit. String
/// interpolation goes through it.
fn tostring(cv: Cv<'_, Pilot>) -> ValXs<'_, Val> {
    let budget = budget(&cv);
    match cv.1 {
        Val::TStr(_) => box_once(Ok(cv.1)),
        Val::BStr(bytes) => box_once(Ok(Val::TStr(bytes))),
        value => box_once(Ok(Val::from(to_json_string(budget, &value)))),
    }
}

/// `tojson`: the input as JSON within the string limit.
fn tojson(cv: Cv<'_, Pilot>) -> ValXs<'_, Val> {
    let budget = budget(&cv);
    box_once(Ok(Val::from(to_json_string(budget, &cv.1))))
}

fn to_json_string(budget: &Budget, value: &Val) -> String {
    match bounded_json(value, budget.max_string) {
        Some(text) => {
            budget.charge_string(text.len());
            text
        }
        None => budget.stop(Stop::StringLength(budget.max_string)),
    }
}

/// `fromjson`: parses after checking the nesting depth, because jaq's parser recurses once per
/// level.
fn fromjson(cv: Cv<'_, Pilot>) -> ValXs<'_, Val> {
    let budget = budget(&cv);
    let Some(text) = cv.1.as_utf8_bytes() else {
        return box_once(Err(Exn::from(Error::typ(cv.1, "string"))));
    };
    budget.step(1 + text.len() as u64 / 64);
    if json_depth(text) > budget.max_depth {
        budget.stop(Stop::Nesting(budget.max_depth));
    }
    // jaq's reader yields the same error forever once it fails, so stop at the first one.
    let mut values = Vec::new();
    for parsed in jaq_json::read::parse_many(text) {
        budget.step(1);
        match parsed {
            Ok(value) => {
                budget.charge(&value);
                values.push(Ok(value));
            }
            Err(e) => {
                values.push(Err(Exn::from(Error::str(format_args!(
                    "cannot parse the string as JSON: {e}"
                )))));
                break;
            }
        }
    }
    Box::new(values.into_iter())
}

/// How many units of work a value stands for: bytes of a string, nodes of an array or
/// object (counted by a charged walk), one for anything else.
fn units(budget: &Budget, value: &Val) -> u64 {
    match value {
        Val::TStr(s) | Val::BStr(s) => s.len() as u64,
        Val::Arr(_) | Val::Obj(_) => {
            let mut count = 0u64;
            let mut pending = vec![value];
            while let Some(value) = pending.pop() {
                count += 1;
                budget.step(1);
                match value {
                    Val::Arr(items) => pending.extend(items.iter()),
                    Val::Obj(entries) => pending.extend(entries.iter().flat_map(|(k, v)| [k, v])),
                    _ => {}
                }
            }
            count
        }
        _ => 1,
    }
}

/// `_pilot_cost_pairs($x)`: charges for work that compares every part of the input with
/// every part of `$x` (substring, sub-array and regex search).
fn cost_pairs(mut cv: Cv<'_, Pilot>) -> ValXs<'_, Val> {
    let budget = budget(&cv);
    let other = cv.0.pop_var();
    let pairs = units(budget, &cv.1).saturating_mul(units(budget, &other));
    budget.step(pairs / 16);
    box_once(Ok(cv.1))
}

/// `_pilot_cost_sort`: charges for the comparisons of sorting the input.
fn cost_sort(cv: Cv<'_, Pilot>) -> ValXs<'_, Val> {
    let budget = budget(&cv);
    let len = match &cv.1 {
        Val::Arr(items) => items.len() as u64,
        _ => 1,
    };
    let log = u64::from(len.max(2).ilog2()) + 1;
    budget.step(units(budget, &cv.1).saturating_mul(log));
    box_once(Ok(cv.1))
}

/// `_pilot_cost_bytes($n)`: charges `$n` bytes per byte of a string input (or per element of
/// an array input), for natives that build a value per byte.
fn cost_bytes(mut cv: Cv<'_, Pilot>) -> ValXs<'_, Val> {
    let budget = budget(&cv);
    let factor =
        cv.0.pop_var()
            .as_isize()
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(1);
    let len = match &cv.1 {
        Val::TStr(s) | Val::BStr(s) => s.len() as u64,
        Val::Arr(items) => items.len() as u64,
        _ => 0,
    };
    budget.alloc(len.saturating_mul(factor));
    box_once(Ok(cv.1))
}
