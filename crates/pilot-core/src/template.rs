//! The `${...}` template language: a closed lookup grammar, never evaluated.
//!
//! Grammar: `${steps.<ref>.output<path>}`, `${input<path>}`, `${run.id}`, `${plan.id}`, where
//! `<ref>` is a step id or a 0-based index and `<path>` is any number of `.field`, `["any key"]`
//! and `[n]` segments. Spaces are allowed right after `${` and right before `}`, nowhere else.
//! `$${` is a literal `${`. A parameter that is exactly one reference keeps the JSON type of the
//! value; a reference inside a longer string is rendered into it (strings raw, other values as
//! compact JSON). Only step params are templated (object keys never are), and a resolved value is
//! never parsed again, so stored outputs cannot inject references.
//!
//! The work is bounded: a string holds at most [`MAX_REFERENCES`] references, a path at most
//! [`MAX_PATH_SEGMENTS`] segments, params nest at most [`MAX_PARAM_DEPTH`] levels, and one
//! resolution produces at most [`MAX_RESOLVED_BYTES`] (approximately), so a small plan cannot
//! make a worker copy a large output thousands of times.

use std::fmt::{self, Write as _};

use serde_json::{Map, Value};

/// The most references one string may hold.
pub const MAX_REFERENCES: usize = 256;

/// The most segments one reference path may have.
pub const MAX_PATH_SEGMENTS: usize = 64;

/// The deepest nesting of objects and arrays in params that is templated.
pub const MAX_PARAM_DEPTH: usize = 128;

/// An approximate bound on the size of the params one resolution produces.
pub const MAX_RESOLVED_BYTES: usize = 64 * 1024 * 1024;

/// A parsed template string: literal text and references, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The parts in order. Adjacent literal text is merged into one part and no literal part is
    /// empty, so a string that is exactly one reference has exactly one part.
    pub parts: Vec<Part>,
}

/// A piece of a template string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text copied as is (with `$${` already unescaped to `${`).
    Literal(String),
    /// A `${...}` reference.
    Ref(Reference),
}

/// One `${...}` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// What it starts from.
    pub root: Root,
    /// The path below the root (below `output` for step references).
    pub path: Vec<PathSegment>,
}

/// The start of a reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// `steps.<ref>.output`.
    Step(StepRef),
    /// `input`.
    Input,
    /// `run.id`.
    RunId,
    /// `plan.id`.
    PlanId,
}

/// How a reference names a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepRef {
    /// By id.
    Id(String),
    /// By 0-based index.
    Index(usize),
}

/// One segment of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSegment {
    /// `.name` or `["name"]`.
    Field(String),
    /// `[n]`.
    Index(usize),
}

/// A template string is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at byte {position}: {message}")]
pub struct TemplateError {
    /// Byte offset in the string where the problem is.
    pub position: usize,
    /// What is wrong.
    pub message: String,
}

/// A reference could not be resolved at run time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ResolveError {
    /// The parameter path (e.g. `body.items[0]`) whose template failed.
    pub param: String,
    /// What is missing, naming the param and the reference.
    pub message: String,
}

/// The values references resolve against.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// `${input}`.
    pub input: &'a Value,
    /// `${run.id}`.
    pub run_id: &'a str,
    /// `${plan.id}` (`None` for ad-hoc runs: referencing it is an error).
    pub plan_id: Option<&'a str>,
    /// Earlier steps in order: id and output (`None` when the step produced none, e.g. it was
    /// skipped or failed with continue_on_error).
    pub steps: &'a [(&'a str, Option<&'a Value>)],
}

impl Template {
    /// The reference when the string is exactly one reference (its value keeps its JSON type).
    pub fn as_single_ref(&self) -> Option<&Reference> {
        match self.parts.as_slice() {
            [Part::Ref(reference)] => Some(reference),
            _ => None,
        }
    }

    /// The references in order.
    pub fn references(&self) -> impl Iterator<Item = &Reference> {
        self.parts.iter().filter_map(|part| match part {
            Part::Ref(reference) => Some(reference),
            Part::Literal(_) => None,
        })
    }
}

impl fmt::Display for Reference {
    /// The canonical text of the reference, e.g. `${steps.fetch.output.items[0]}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("${")?;
        match &self.root {
            Root::Step(StepRef::Id(id)) => write!(f, "steps.{id}.output")?,
            Root::Step(StepRef::Index(index)) => write!(f, "steps.{index}.output")?,
            Root::Input => f.write_str("input")?,
            Root::RunId => f.write_str("run.id")?,
            Root::PlanId => f.write_str("plan.id")?,
        }
        for segment in &self.path {
            match segment {
                PathSegment::Field(name) => write_field(f, name, false)?,
                PathSegment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        f.write_str("}")
    }
}

/// Parses one string.
pub fn parse(text: &str) -> Result<Template, TemplateError> {
    let bytes = text.as_bytes();
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut count = 0;
    // Text from `copied` to `pos` is literal and not yet pushed into `literal`.
    let mut copied = 0;
    let mut pos = 0;
    while let Some(offset) = bytes[pos..].iter().position(|&b| b == b'$') {
        pos += offset;
        if bytes[pos + 1..].starts_with(b"${") {
            literal.push_str(&text[copied..pos]);
            literal.push_str("${");
            pos += 3;
            copied = pos;
        } else if bytes.get(pos + 1) == Some(&b'{') {
            if count == MAX_REFERENCES {
                return Err(error(
                    pos,
                    format!("too many references: a string may hold at most {MAX_REFERENCES}"),
                ));
            }
            literal.push_str(&text[copied..pos]);
            let mut cursor = Cursor {
                text,
                pos: pos + 2,
                open: pos,
            };
            let reference = cursor.reference()?;
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(Part::Ref(reference));
            count += 1;
            pos = cursor.pos;
            copied = pos;
        } else {
            pos += 1;
        }
    }
    literal.push_str(&text[copied..]);
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    Ok(Template { parts })
}

/// Every reference in a params value (strings at any depth), with the param path each sits at.
/// The error names the param path.
pub fn references(params: &Value) -> Result<Vec<(String, Reference)>, (String, TemplateError)> {
    let mut found = Vec::new();
    let mut path = Vec::new();
    let mut first_error = None;
    walk_strings(params, &mut path, &mut |path, text| {
        if first_error.is_some() {
            return;
        }
        match parse(text) {
            Ok(template) => {
                let at = format_param_path("", path);
                for part in template.parts {
                    if let Part::Ref(reference) = part {
                        found.push((at.clone(), reference));
                    }
                }
            }
            Err(err) => first_error = Some((format_param_path("", path), err)),
        }
    })
    .map_err(|path| (path, depth_error()))?;
    match first_error {
        Some(err) => Err(err),
        None => Ok(found),
    }
}

/// Resolves every string in `params` (at any depth) against `scope`.
pub fn resolve(params: &Value, scope: &Scope<'_>) -> Result<Value, ResolveError> {
    let mut resolver = Resolver {
        scope,
        limit: MAX_RESOLVED_BYTES,
        budget: MAX_RESOLVED_BYTES,
        path: Vec::new(),
    };
    resolver.value(params)
}

/// Resolves a step's params map, like [`resolve`] without wrapping the map in a [`Value`]
/// first (which would copy it).
pub fn resolve_params(
    params: &Map<String, Value>,
    scope: &Scope<'_>,
) -> Result<Map<String, Value>, ResolveError> {
    resolve_params_within(params, scope, MAX_RESOLVED_BYTES)
}

/// [`resolve_params`] producing at most `budget` bytes (approximately; never more than
/// [`MAX_RESOLVED_BYTES`]): the engine bounds a step's params by the run's state budget.
pub fn resolve_params_within(
    params: &Map<String, Value>,
    scope: &Scope<'_>,
    budget: usize,
) -> Result<Map<String, Value>, ResolveError> {
    let budget = budget.min(MAX_RESOLVED_BYTES);
    let mut resolver = Resolver {
        scope,
        limit: budget,
        budget,
        path: Vec::new(),
    };
    resolver.map(params)
}

/// One step of a param path: an object key or an array index.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ParamSeg<'a> {
    Key(&'a str),
    Index(usize),
}

/// Calls `visit` with every string in `value` and the param path it sits at. Fails with the
/// path where the nesting exceeds [`MAX_PARAM_DEPTH`].
pub(crate) fn walk_strings<'v>(
    value: &'v Value,
    path: &mut Vec<ParamSeg<'v>>,
    visit: &mut dyn FnMut(&[ParamSeg<'v>], &'v str),
) -> Result<(), String> {
    if path.len() > MAX_PARAM_DEPTH {
        return Err(format_param_path("", path));
    }
    match value {
        Value::String(text) => visit(path, text),
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                path.push(ParamSeg::Index(index));
                walk_strings(item, path, visit)?;
                path.pop();
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                path.push(ParamSeg::Key(key));
                walk_strings(item, path, visit)?;
                path.pop();
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

/// Formats a param path below `root`: `body.items[0]` with an empty root, `params.body.items[0]`
/// with root `params`. Keys that are not plain names are written `["like this"]`.
pub(crate) fn format_param_path(root: &str, path: &[ParamSeg<'_>]) -> String {
    let mut out = String::from(root);
    for segment in path {
        // Writing to a String cannot fail.
        let _ = match segment {
            ParamSeg::Key(key) => {
                let bare = out.is_empty();
                write_field(&mut out, key, bare)
            }
            ParamSeg::Index(index) => write!(out, "[{index}]"),
        };
    }
    out
}

/// The message for params nested deeper than [`MAX_PARAM_DEPTH`].
pub(crate) fn depth_error() -> TemplateError {
    error(
        0,
        format!("params are nested deeper than {MAX_PARAM_DEPTH} levels"),
    )
}

fn error(position: usize, message: impl Into<String>) -> TemplateError {
    TemplateError {
        position,
        message: message.into(),
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Writes `.name` (or just `name` when `bare`), or `["name"]` when the key is not a plain name.
fn write_field(out: &mut dyn fmt::Write, name: &str, bare: bool) -> fmt::Result {
    if !name.is_empty() && name.bytes().all(is_name_byte) {
        if !bare {
            out.write_char('.')?;
        }
        out.write_str(name)
    } else {
        out.write_str("[\"")?;
        for c in name.chars() {
            match c {
                '"' => out.write_str("\\\"")?,
                '\\' => out.write_str("\\\\")?,
                c => out.write_char(c)?,
            }
        }
        out.write_str("\"]")
    }
}

/// The parser of one reference, from just after its `${` to just after its `}`.
struct Cursor<'t> {
    text: &'t str,
    pos: usize,
    /// Where the `${` starts, for errors about the reference as a whole.
    open: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    /// The error for finding something other than `expected` at the cursor.
    fn unexpected(&self, expected: &str) -> TemplateError {
        let rest = &self.text[self.pos..];
        match rest.chars().next() {
            None => self.unterminated(),
            Some('$') if rest[1..].starts_with('{') => {
                error(self.pos, "nested `${` is not allowed inside a reference")
            }
            Some('}') => error(self.pos, format!("expected {expected} before `}}`")),
            Some(c) => error(self.pos, format!("expected {expected}, found {c:?}")),
        }
    }

    fn unterminated(&self) -> TemplateError {
        error(
            self.open,
            "unterminated `${`: no closing `}` (write `$${` for a literal `${`)",
        )
    }

    fn expect(&mut self, byte: u8, expected: &str) -> Result<(), TemplateError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected(expected))
        }
    }

    /// Reads a run of name characters (`[A-Za-z0-9_-]`), possibly empty.
    fn name(&mut self) -> &str {
        let start = self.pos;
        while self.peek().is_some_and(is_name_byte) {
            self.pos += 1;
        }
        &self.text[start..self.pos]
    }

    /// Reads a decimal number, with `what` naming it in errors.
    fn number(&mut self, what: &str) -> Result<usize, TemplateError> {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        let digits = &self.text[start..self.pos];
        if digits.len() > 1 && digits.starts_with('0') {
            return Err(error(start, format!("{what} {digits} has a leading zero")));
        }
        digits
            .parse()
            .map_err(|_| error(start, format!("{what} {digits} is too large")))
    }

    fn reference(&mut self) -> Result<Reference, TemplateError> {
        self.skip_spaces();
        match self.peek() {
            Some(b'}') => return Err(error(self.open, "empty reference `${}`")),
            None => return Err(self.unterminated()),
            Some(_) => {}
        }
        let start = self.pos;
        let root = match self.name() {
            "" => {
                return Err(
                    self.unexpected("a reference (steps.<id>.output, input, run.id or plan.id)")
                );
            }
            "steps" => Root::Step(self.step_root()?),
            "input" => Root::Input,
            "run" => {
                self.id_field("run")?;
                Root::RunId
            }
            "plan" => {
                self.id_field("plan")?;
                Root::PlanId
            }
            other => {
                let shown: String = other.chars().take(64).collect();
                return Err(error(
                    start,
                    format!("unknown root '{shown}': expected steps, input, run or plan"),
                ));
            }
        };
        let path = match root {
            Root::Step(_) | Root::Input => self.path()?,
            Root::RunId | Root::PlanId => Vec::new(),
        };
        self.skip_spaces();
        match self.peek() {
            Some(b'}') => {
                self.pos += 1;
                Ok(Reference { root, path })
            }
            _ => Err(self.unexpected("`}`, `.field` or `[index]`")),
        }
    }

    /// Parses `.<ref>.output` after `steps`.
    fn step_root(&mut self) -> Result<StepRef, TemplateError> {
        self.expect(b'.', "`.` and a step id or index after `steps`")?;
        let start = self.pos;
        let step = match self.peek() {
            Some(b) if b.is_ascii_digit() => {
                let index = self.number("step index")?;
                if self.peek().is_some_and(is_name_byte) {
                    self.name();
                    return Err(error(
                        start,
                        "invalid step reference: a step id starts with a letter, an index is only digits",
                    ));
                }
                StepRef::Index(index)
            }
            _ => {
                let id = self.name();
                if id.is_empty() {
                    return Err(self.unexpected("a step id or index after `steps.`"));
                }
                if !crate::is_valid_step_id(id) {
                    let shown: String = id.chars().take(64).collect();
                    return Err(error(
                        start,
                        format!(
                            "invalid step id '{shown}': ids start with a letter and have at most 64 letters, digits, '_' or '-'"
                        ),
                    ));
                }
                StepRef::Id(id.to_owned())
            }
        };
        let after_ref = self.pos;
        if self.peek() != Some(b'.') {
            return Err(error(after_ref, "expected `.output` after `steps.<ref>`"));
        }
        self.pos += 1;
        if self.name() != "output" {
            return Err(error(after_ref, "expected `.output` after `steps.<ref>`"));
        }
        Ok(step)
    }

    /// Parses `.id` after `run` or `plan`, which take no path.
    fn id_field(&mut self, root: &str) -> Result<(), TemplateError> {
        let at = self.pos;
        if self.peek() != Some(b'.') {
            return Err(error(at, format!("expected `.id` after `{root}`")));
        }
        self.pos += 1;
        if self.name() != "id" {
            return Err(error(
                at,
                format!("expected `.id` after `{root}` (`{root}.id` is all it has)"),
            ));
        }
        if matches!(self.peek(), Some(b'.' | b'[')) {
            return Err(error(
                self.pos,
                format!("`{root}.id` is a string and has no fields"),
            ));
        }
        Ok(())
    }

    fn path(&mut self) -> Result<Vec<PathSegment>, TemplateError> {
        let mut path = Vec::new();
        loop {
            let start = self.pos;
            let segment = match self.peek() {
                Some(b'.') => {
                    self.pos += 1;
                    let name = self.name();
                    if name.is_empty() {
                        return Err(self.unexpected("a field name after `.`"));
                    }
                    PathSegment::Field(name.to_owned())
                }
                Some(b'[') => {
                    self.pos += 1;
                    let segment = match self.peek() {
                        Some(b'"') => PathSegment::Field(self.quoted()?),
                        Some(b) if b.is_ascii_digit() => PathSegment::Index(self.number("index")?),
                        _ => {
                            return Err(
                                self.unexpected("a non-negative index or a quoted key after `[`")
                            );
                        }
                    };
                    self.expect(b']', "`]`")?;
                    segment
                }
                _ => return Ok(path),
            };
            if path.len() == MAX_PATH_SEGMENTS {
                return Err(error(
                    start,
                    format!("path too long: at most {MAX_PATH_SEGMENTS} segments"),
                ));
            }
            path.push(segment);
        }
    }

    /// Parses a `"quoted key"` in which only `\"` and `\\` are escapes.
    fn quoted(&mut self) -> Result<String, TemplateError> {
        self.pos += 1;
        let mut key = String::new();
        let mut copied = self.pos;
        loop {
            match self.peek() {
                None => return Err(self.unterminated()),
                Some(b'"') => {
                    key.push_str(&self.text[copied..self.pos]);
                    self.pos += 1;
                    return Ok(key);
                }
                Some(b'\\') => {
                    key.push_str(&self.text[copied..self.pos]);
                    match self.text.as_bytes().get(self.pos + 1) {
                        Some(&b @ (b'"' | b'\\')) => key.push(char::from(b)),
                        None => return Err(self.unterminated()),
                        Some(_) => {
                            return Err(error(
                                self.pos,
                                "unsupported escape in a quoted key: only \\\" and \\\\",
                            ));
                        }
                    }
                    self.pos += 2;
                    copied = self.pos;
                }
                Some(_) => self.pos += 1,
            }
        }
    }
}

/// The state of one resolution: the scope, the size still allowed, and the param path being
/// resolved (for errors).
struct Resolver<'s, 'v> {
    scope: &'s Scope<'s>,
    /// The size allowed in all.
    limit: usize,
    /// The size still allowed.
    budget: usize,
    path: Vec<ParamSeg<'v>>,
}

impl<'s, 'v> Resolver<'s, 'v> {
    fn fail(&self, message: impl fmt::Display) -> ResolveError {
        let param = format_param_path("", &self.path);
        ResolveError {
            message: format!("param '{param}': {message}"),
            param,
        }
    }

    fn spend(&mut self, bytes: usize) -> Result<(), ResolveError> {
        match self.budget.checked_sub(bytes) {
            Some(left) => {
                self.budget = left;
                Ok(())
            }
            None => Err(self.fail(format_args!(
                "resolved params would exceed {}",
                crate::human_size(self.limit)
            ))),
        }
    }

    fn value(&mut self, value: &'v Value) -> Result<Value, ResolveError> {
        if self.path.len() > MAX_PARAM_DEPTH {
            return Err(self.fail(depth_error().message));
        }
        match value {
            Value::String(text) => self.string(text),
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (index, item) in items.iter().enumerate() {
                    self.path.push(ParamSeg::Index(index));
                    out.push(self.value(item)?);
                    self.path.pop();
                }
                Ok(Value::Array(out))
            }
            Value::Object(map) => self.map(map).map(Value::Object),
            Value::Null | Value::Bool(_) | Value::Number(_) => Ok(value.clone()),
        }
    }

    fn map(&mut self, map: &'v Map<String, Value>) -> Result<Map<String, Value>, ResolveError> {
        let mut out = Map::new();
        for (key, item) in map {
            self.path.push(ParamSeg::Key(key));
            let resolved = self.value(item)?;
            self.path.pop();
            out.insert(key.clone(), resolved);
        }
        Ok(out)
    }

    fn string(&mut self, text: &str) -> Result<Value, ResolveError> {
        if !text.contains("${") {
            self.spend(text.len())?;
            return Ok(Value::String(text.to_owned()));
        }
        let template = parse(text).map_err(|err| self.fail(format_args!("bad template {err}")))?;
        if let Some(reference) = template.as_single_ref() {
            return match self.lookup(reference)? {
                Found::Json(found) => {
                    self.spend(approximate_size(found, self.budget))?;
                    Ok(found.clone())
                }
                Found::Text(found) => {
                    self.spend(found.len())?;
                    Ok(Value::String(found.to_owned()))
                }
            };
        }
        let mut out = String::new();
        for part in &template.parts {
            match part {
                Part::Literal(literal) => {
                    self.spend(literal.len())?;
                    out.push_str(literal);
                }
                Part::Ref(reference) => match self.lookup(reference)? {
                    Found::Json(Value::String(found)) => {
                        self.spend(found.len())?;
                        out.push_str(found);
                    }
                    Found::Text(found) => {
                        self.spend(found.len())?;
                        out.push_str(found);
                    }
                    Found::Json(found) => {
                        self.spend(approximate_size(found, self.budget))?;
                        // Writing to a String cannot fail; `Value`'s Display is compact JSON.
                        let _ = write!(out, "{found}");
                    }
                },
            }
        }
        Ok(Value::String(out))
    }

    fn lookup(&self, reference: &Reference) -> Result<Found<'s>, ResolveError> {
        let scope = self.scope;
        let mut current: &'s Value = match &reference.root {
            Root::Input => scope.input,
            Root::RunId => return Ok(Found::Text(scope.run_id)),
            Root::PlanId => {
                return match scope.plan_id {
                    Some(id) => Ok(Found::Text(id)),
                    None => Err(self.fail(format_args!(
                        "{reference} finds nothing: this run has no plan (an ad-hoc step)"
                    ))),
                };
            }
            Root::Step(step) => {
                let found = match step {
                    StepRef::Id(id) => scope.steps.iter().find(|(sid, _)| sid == id),
                    StepRef::Index(index) => scope.steps.get(*index),
                };
                match found {
                    None => {
                        return Err(self.fail(format_args!(
                            "{reference} finds nothing: no such step before this one"
                        )));
                    }
                    Some((_, None)) => {
                        return Err(self.fail(format_args!(
                            "{reference} finds nothing: the step produced no output (it was skipped or failed)"
                        )));
                    }
                    Some((_, Some(output))) => output,
                }
            }
        };
        for (depth, segment) in reference.path.iter().enumerate() {
            let next = match (segment, current) {
                (PathSegment::Field(name), Value::Object(map)) => map.get(name),
                (PathSegment::Index(index), Value::Array(items)) => items.get(*index),
                _ => None,
            };
            match next {
                Some(value) => current = value,
                None => {
                    let at = Reference {
                        root: reference.root.clone(),
                        path: reference.path[..depth].to_vec(),
                    };
                    let why = match (segment, current) {
                        (PathSegment::Field(name), Value::Object(_)) => {
                            format!("{at} has no field '{name}'")
                        }
                        (PathSegment::Index(index), Value::Array(items)) => format!(
                            "index {index} is out of range: {at} has {} items",
                            items.len()
                        ),
                        (PathSegment::Field(name), Value::Array(_)) => format!(
                            "{at} is an array, not an object (field '{name}'; write [n] for an index)"
                        ),
                        (PathSegment::Field(_), other) => {
                            format!("{at} is {}, not an object", kind_of(other))
                        }
                        (PathSegment::Index(_), other) => {
                            format!("{at} is {}, not an array", kind_of(other))
                        }
                    };
                    return Err(self.fail(format_args!("{reference} finds nothing: {why}")));
                }
            }
        }
        Ok(Found::Json(current))
    }
}

/// What a reference finds: stored JSON, or one of the run's ids.
enum Found<'s> {
    Json(&'s Value),
    Text(&'s str),
}

/// `a string`, `a number`... for error messages.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Roughly the bytes `value` takes, counting no further than `limit` (then it returns more
/// than `limit`), so measuring costs no more than copying.
fn approximate_size(value: &Value, limit: usize) -> usize {
    let mut total = 0usize;
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        total = total.saturating_add(match value {
            Value::String(text) => text.len() + 2,
            Value::Array(items) => {
                stack.extend(items.iter());
                2 + items.len()
            }
            Value::Object(map) => {
                for (key, item) in map {
                    total = total.saturating_add(key.len() + 4);
                    stack.push(item);
                }
                2
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => 8,
        });
        if total > limit {
            return total;
        }
    }
    total
}
