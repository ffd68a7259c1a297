//! The rewrite from a parsed expression to the one that actually runs.
//!
//! jaq's core operators build values without asking anyone, so before compiling, every place
//! where a value can grow is routed through a native that charges the budget:
//!
//! - `l + r`, `l - r`, `l * r`, `l / r` become `_pilot_add(l; r)` and so on, which bound string
//!   repetition and concatenation and charge for what they copy;
//! - `[f]` becomes `[f | _pilot_charge]` and `{k: v}` becomes `{k: (v | _pilot_charge)}`;
//! - `p = f`, `p |= f`, `p += f`, `p //= f` become `f as $_pilot_v | p |= (... | _pilot_charge)`,
//!   so each value stored into a path is charged;
//! - string interpolation `"a\(f)"` becomes `_pilot_add("a"; f | _pilot_tostring)` (jaq would
//!   otherwise join the parts with its own unbounded `+` and render them without limit);
//! - `..` becomes `recurse` (a jq definition, so each value it yields is a counted step),
//!   except as the target of an update, where jaq already calls the update once per value.
//!
//! The same walk rejects names starting with `_pilot` (reserved for the above) and
//! expressions nested deeper than the compiler's stack allows. It applies to the jq standard
//! library too, so `add`, `join`, `map` and friends are bounded the same way.

use std::collections::BTreeSet;

use jaq_core::load::lex::StrPart;
use jaq_core::load::parse::{BinaryOp, Def, Pattern, Term};
use jaq_core::ops::Math;
use jaq_core::path::{Part, Path};

/// The prefix of every name the rewrite introduces.
pub(crate) const RESERVED_PREFIX: &str = "_pilot";
const VALUE_VAR: &str = "$_pilot_v";

/// Why an expression was rejected by the rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// It uses a reserved name.
    Reserved(String),
    /// It nests deeper than allowed.
    TooDeep(usize),
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Reserved(name) => {
                write!(
                    f,
                    "`{name}`: names starting with `{RESERVED_PREFIX}` are reserved"
                )
            }
            Self::TooDeep(n) => write!(f, "the expression nests deeper than {n} levels"),
        }
    }
}

/// The rewrite, for user expressions (`trusted: false`: reserved names rejected) or for the
/// standard library.
pub(crate) struct Rewrite {
    trusted: bool,
    max_depth: usize,
}

type R<'s> = Result<Term<&'s str>, Rejected>;

impl Rewrite {
    pub(crate) fn user(max_depth: usize) -> Self {
        Self {
            trusted: false,
            max_depth,
        }
    }

    pub(crate) fn library() -> Self {
        Self {
            trusted: true,
            max_depth: usize::MAX,
        }
    }

    /// Rewrites a definition of the library.
    pub(crate) fn def<'s>(&self, def: Def<&'s str>) -> Result<Def<&'s str>, Rejected> {
        self.def_at(def, 0)
    }

    /// Rewrites an expression.
    pub(crate) fn term<'s>(&self, term: Term<&'s str>) -> R<'s> {
        self.term_at(term, 0)
    }

    fn name(&self, name: &str) -> Result<(), Rejected> {
        if !self.trusted && name.trim_start_matches('$').starts_with(RESERVED_PREFIX) {
            return Err(Rejected::Reserved(name.to_owned()));
        }
        Ok(())
    }

    fn def_at<'s>(&self, def: Def<&'s str>, depth: usize) -> Result<Def<&'s str>, Rejected> {
        self.name(def.name)?;
        for arg in &def.args {
            self.name(arg)?;
        }
        let body = self.term_at(def.body, depth + 1)?;
        Ok(Def {
            name: def.name,
            args: def.args,
            body,
        })
    }

    fn boxed<'s>(&self, term: Term<&'s str>, depth: usize) -> Result<Box<Term<&'s str>>, Rejected> {
        self.term_at(term, depth).map(Box::new)
    }

    fn terms<'s>(
        &self,
        terms: Vec<Term<&'s str>>,
        depth: usize,
    ) -> Result<Vec<Term<&'s str>>, Rejected> {
        terms.into_iter().map(|t| self.term_at(t, depth)).collect()
    }

    fn term_at<'s>(&self, term: Term<&'s str>, depth: usize) -> R<'s> {
        if depth > self.max_depth {
            return Err(Rejected::TooDeep(self.max_depth));
        }
        let d = depth + 1;
        Ok(match term {
            Term::Id => Term::Id,
            Term::Recurse => call("recurse", Vec::new()),
            Term::Num(n) => Term::Num(n),
            Term::Str(format, parts) => self.string(format, parts, d)?,
            Term::Arr(None) => Term::Arr(None),
            Term::Arr(Some(f)) => Term::Arr(Some(Box::new(charged(self.term_at(*f, d)?)))),
            Term::Obj(entries) => Term::Obj(
                entries
                    .into_iter()
                    .map(|(k, v)| self.entry(k, v, d))
                    .collect::<Result<_, _>>()?,
            ),
            Term::Neg(f) => Term::Neg(self.boxed(*f, d)?),
            Term::BinOp(l, op, r) => self.binop(*l, op, *r, d)?,
            Term::Label(x, f) => {
                self.name(x)?;
                Term::Label(x, self.boxed(*f, d)?)
            }
            Term::Break(x) => {
                self.name(x)?;
                Term::Break(x)
            }
            Term::Fold(kind, xs, pattern, args) => Term::Fold(
                kind,
                self.boxed(*xs, d)?,
                self.pattern(pattern, d)?,
                self.terms(args, d)?,
            ),
            Term::TryCatch(body, handler) => Term::TryCatch(
                self.boxed(*body, d)?,
                handler.map(|h| self.boxed(*h, d)).transpose()?,
            ),
            Term::IfThenElse(branches, otherwise) => Term::IfThenElse(
                branches
                    .into_iter()
                    .map(|(c, t)| Ok((self.term_at(c, d)?, self.term_at(t, d)?)))
                    .collect::<Result<_, Rejected>>()?,
                otherwise.map(|e| self.boxed(*e, d)).transpose()?,
            ),
            Term::Def(defs, body) => Term::Def(
                defs.into_iter()
                    .map(|def| self.def_at(def, d))
                    .collect::<Result<_, _>>()?,
                self.boxed(*body, d)?,
            ),
            Term::Call(name, args) => {
                self.name(name)?;
                Term::Call(name, self.terms(args, d)?)
            }
            Term::Var(x) => {
                self.name(x)?;
                Term::Var(x)
            }
            Term::Path(f, path) => Term::Path(self.boxed(*f, d)?, self.path(path, d)?),
        })
    }

    fn path<'s>(
        &self,
        path: Path<Term<&'s str>>,
        depth: usize,
    ) -> Result<Path<Term<&'s str>>, Rejected> {
        let parts = path
            .0
            .into_iter()
            .map(|(part, opt)| {
                let part = match part {
                    Part::Index(i) => Part::Index(self.term_at(i, depth)?),
                    Part::Range(from, upto) => Part::Range(
                        from.map(|t| self.term_at(t, depth)).transpose()?,
                        upto.map(|t| self.term_at(t, depth)).transpose()?,
                    ),
                };
                Ok((part, opt))
            })
            .collect::<Result<_, Rejected>>()?;
        Ok(Path(parts))
    }

    fn pattern<'s>(
        &self,
        pattern: Pattern<&'s str>,
        depth: usize,
    ) -> Result<Pattern<&'s str>, Rejected> {
        if depth > self.max_depth {
            return Err(Rejected::TooDeep(self.max_depth));
        }
        Ok(match pattern {
            Pattern::Var(x) => {
                self.name(x)?;
                Pattern::Var(x)
            }
            Pattern::Arr(items) => Pattern::Arr(
                items
                    .into_iter()
                    .map(|p| self.pattern(p, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            Pattern::Obj(entries) => Pattern::Obj(
                entries
                    .into_iter()
                    .map(|(k, p)| Ok((self.term_at(k, depth + 1)?, self.pattern(p, depth + 1)?)))
                    .collect::<Result<_, Rejected>>()?,
            ),
        })
    }

    /// An object entry: the value is charged; `{$x}` is spelled out as `{"x": $x}` so its
    /// value is charged too (`{a}` reads `.a`, which builds nothing).
    fn entry<'s>(
        &self,
        key: Term<&'s str>,
        value: Option<Term<&'s str>>,
        depth: usize,
    ) -> Result<(Term<&'s str>, Option<Term<&'s str>>), Rejected> {
        Ok(match (key, value) {
            (Term::Var(x), None) => {
                self.name(x)?;
                let name = x.strip_prefix('$').unwrap_or(x);
                (
                    Term::Str(None, vec![StrPart::Str(name)]),
                    Some(charged(Term::Var(x))),
                )
            }
            (key, None) => (self.term_at(key, depth)?, None),
            (key, Some(value)) => (
                self.term_at(key, depth)?,
                Some(charged(self.term_at(value, depth)?)),
            ),
        })
    }

    fn string<'s>(
        &self,
        format: Option<&'s str>,
        parts: Vec<StrPart<&'s str, Term<&'s str>>>,
        depth: usize,
    ) -> R<'s> {
        if !parts.iter().any(|p| matches!(p, StrPart::Term(_))) {
            return Ok(Term::Str(format, parts));
        }
        let render = || match format {
            Some(format) => call(format, Vec::new()),
            None => call("_pilot_tostring", Vec::new()),
        };
        let mut pieces = Vec::with_capacity(parts.len());
        for part in parts {
            pieces.push(match part {
                StrPart::Str(s) => Term::Str(None, vec![StrPart::Str(s)]),
                StrPart::Char(c) => Term::Str(None, vec![StrPart::Char(c)]),
                StrPart::Term(t) => pipe(self.term_at(t, depth)?, render()),
            });
        }
        // The same shape as jaq's: `p1 + (p2 + (... + pn))`.
        let mut pieces = pieces.into_iter().rev();
        let last = pieces.next().unwrap_or(Term::Str(None, Vec::new()));
        Ok(pieces.fold(last, |acc, piece| call("_pilot_add", vec![piece, acc])))
    }

    fn binop<'s>(
        &self,
        l: Term<&'s str>,
        op: BinaryOp<&'s str>,
        r: Term<&'s str>,
        depth: usize,
    ) -> R<'s> {
        Ok(match op {
            BinaryOp::Math(Math::Rem) => Term::BinOp(
                self.boxed(l, depth)?,
                BinaryOp::Math(Math::Rem),
                self.boxed(r, depth)?,
            ),
            BinaryOp::Math(op) => math(op, self.term_at(l, depth)?, self.term_at(r, depth)?),
            BinaryOp::Update => {
                let target = self.target(l, depth)?;
                update(target, charged(self.term_at(r, depth)?))
            }
            BinaryOp::Assign => self.bind_value(l, r, Term::Var(VALUE_VAR), depth)?,
            BinaryOp::UpdateMath(op) => {
                self.bind_value(l, r, math(op, Term::Id, Term::Var(VALUE_VAR)), depth)?
            }
            BinaryOp::UpdateAlt => {
                let alt = Term::BinOp(
                    Box::new(Term::Id),
                    BinaryOp::Alt,
                    Box::new(Term::Var(VALUE_VAR)),
                );
                self.bind_value(l, r, alt, depth)?
            }
            BinaryOp::Pipe(pattern) => Term::BinOp(
                self.boxed(l, depth)?,
                BinaryOp::Pipe(pattern.map(|p| self.pattern(p, depth)).transpose()?),
                self.boxed(r, depth)?,
            ),
            op @ (BinaryOp::Comma
            | BinaryOp::Alt
            | BinaryOp::Or
            | BinaryOp::And
            | BinaryOp::Cmp(_)) => Term::BinOp(self.boxed(l, depth)?, op, self.boxed(r, depth)?),
        })
    }

    /// `r as $_pilot_v | l |= (new | _pilot_charge)`: jaq's `=`, `op=` and `//=` evaluate the
    /// right side once against the input, then update every path of the left side.
    fn bind_value<'s>(
        &self,
        l: Term<&'s str>,
        r: Term<&'s str>,
        new: Term<&'s str>,
        depth: usize,
    ) -> R<'s> {
        let value = self.term_at(r, depth)?;
        let target = self.target(l, depth)?;
        Ok(Term::BinOp(
            Box::new(value),
            BinaryOp::Pipe(Some(Pattern::Var(VALUE_VAR))),
            Box::new(update(target, charged(new))),
        ))
    }

    /// The left side of an update; a bare `..` stays jaq's own (it updates leaves first).
    fn target<'s>(&self, l: Term<&'s str>, depth: usize) -> R<'s> {
        match l {
            Term::Recurse => Ok(Term::Recurse),
            l => self.term_at(l, depth),
        }
    }
}

fn call<'s>(name: &'s str, args: Vec<Term<&'s str>>) -> Term<&'s str> {
    Term::Call(name, args)
}

fn pipe<'s>(l: Term<&'s str>, r: Term<&'s str>) -> Term<&'s str> {
    Term::BinOp(Box::new(l), BinaryOp::Pipe(None), Box::new(r))
}

fn charged(term: Term<&str>) -> Term<&str> {
    pipe(term, call("_pilot_charge", Vec::new()))
}

fn update<'s>(target: Term<&'s str>, new: Term<&'s str>) -> Term<&'s str> {
    Term::BinOp(Box::new(target), BinaryOp::Update, Box::new(new))
}

fn math<'s>(op: Math, l: Term<&'s str>, r: Term<&'s str>) -> Term<&'s str> {
    let native = match op {
        Math::Add => "_pilot_add",
        Math::Sub => "_pilot_sub",
        Math::Mul => "_pilot_mul",
        Math::Div => "_pilot_div",
        Math::Rem => return Term::BinOp(Box::new(l), BinaryOp::Math(Math::Rem), Box::new(r)),
    };
    call(native, vec![l, r])
}

/// The names of the filters a term calls (including string formats such as `@base64`), so
/// that only the library definitions an expression needs are compiled.
pub(crate) fn called_names<'s>(term: &Term<&'s str>, names: &mut BTreeSet<&'s str>) {
    let mut pending = vec![term];
    while let Some(term) = pending.pop() {
        match term {
            Term::Id
            | Term::Recurse
            | Term::Num(_)
            | Term::Var(_)
            | Term::Break(_)
            | Term::Arr(None) => {}
            Term::Str(format, parts) => {
                names.extend(format.iter().copied());
                pending.extend(parts.iter().filter_map(|p| match p {
                    StrPart::Term(t) => Some(t),
                    _ => None,
                }));
            }
            Term::Arr(Some(f)) | Term::Neg(f) | Term::Label(_, f) => pending.push(f),
            Term::Obj(entries) => {
                for (k, v) in entries {
                    pending.push(k);
                    pending.extend(v.iter());
                }
            }
            Term::BinOp(l, op, r) => {
                pending.push(l);
                pending.push(r);
                if let BinaryOp::Pipe(Some(pattern)) = op {
                    pattern_names(pattern, &mut pending);
                }
            }
            Term::Fold(_, xs, pattern, args) => {
                pending.push(xs);
                pattern_names(pattern, &mut pending);
                pending.extend(args.iter());
            }
            Term::TryCatch(body, handler) => {
                pending.push(body);
                pending.extend(handler.iter().map(|h| &**h));
            }
            Term::IfThenElse(branches, otherwise) => {
                for (c, t) in branches {
                    pending.push(c);
                    pending.push(t);
                }
                pending.extend(otherwise.iter().map(|e| &**e));
            }
            Term::Def(defs, body) => {
                pending.extend(defs.iter().map(|d| &d.body));
                pending.push(body);
            }
            Term::Call(name, args) => {
                names.insert(name);
                pending.extend(args.iter());
            }
            Term::Path(f, path) => {
                pending.push(f);
                for (part, _) in &path.0 {
                    match part {
                        Part::Index(i) => pending.push(i),
                        Part::Range(from, upto) => pending.extend(from.iter().chain(upto.iter())),
                    }
                }
            }
        }
    }
}

fn pattern_names<'a, 's>(pattern: &'a Pattern<&'s str>, pending: &mut Vec<&'a Term<&'s str>>) {
    match pattern {
        Pattern::Var(_) => {}
        Pattern::Arr(items) => items.iter().for_each(|p| pattern_names(p, pending)),
        Pattern::Obj(entries) => {
            for (k, p) in entries {
                pending.push(k);
                pattern_names(p, pending);
            }
        }
    }
}
