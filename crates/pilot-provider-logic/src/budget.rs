//! The per-evaluation budget and the hook that enforces it.
//!
//! jaq offers no limits of its own (its README says it "does not take countermeasures against
//! any kind of resource exhaustion"), but it asks its data type for the look-up table before
//! evaluating every filter ([`HasLut::lut`]). That call is our hook: it counts a step, looks at
//! the clock and the cancel flag now and then, and measures how much native stack the
//! evaluation uses. The natives this crate adds (see `natives.rs`) charge the same budget for
//! the values they build.
//!
//! When a bound is passed, the evaluation is stopped with [`std::panic::resume_unwind`]: the
//! only way out of jaq's iterators from inside them. `resume_unwind` does not run the panic
//! hook (nothing is printed) and the worker catches the payload right away, so this is a
//! controlled exit, not a crash. It needs `panic = "unwind"`, which `lib.rs` checks at compile
//! time.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use jaq_core::data::HasLut;
use jaq_core::{DataT, Lut};
use jaq_json::{Num, Val};

use crate::JqLimits;

/// How often (in steps) the clock and the cancel flag are read.
const CLOCK_EVERY: u64 = 1 << 12;

/// Estimated heap bytes of one value slot (the size of `Val`).
const SLOT_BYTES: u64 = 16;
/// Estimated bytes of a string's header (its box and `Bytes` handle).
const STRING_BYTES: u64 = 48;
/// Estimated bytes of an array's header (its `Rc<Vec>`).
const ARRAY_BYTES: u64 = 40;
/// Estimated bytes of an object's header and of each of its entries (key, value, hash, index).
const OBJECT_BYTES: u64 = 64;
const ENTRY_BYTES: u64 = 48;

/// The data kind of our filters: JSON values, and an environment holding the budget.
pub(crate) struct Pilot;

impl DataT for Pilot {
    type V<'a> = Val;
    type Data<'a> = Env<'a>;
}

/// What every filter and native of one evaluation can reach.
#[derive(Clone)]
pub(crate) struct Env<'a> {
    lut: &'a Lut<Pilot>,
    pub(crate) budget: &'a Budget,
}

impl<'a> Env<'a> {
    pub(crate) fn new(lut: &'a Lut<Pilot>, budget: &'a Budget) -> Self {
        Self { lut, budget }
    }
}

impl<'a> HasLut<'a, Pilot> for Env<'a> {
    fn lut(&self) -> &'a Lut<Pilot> {
        self.budget.step(1);
        self.budget.check_stack();
        self.lut
    }
}

/// Why an evaluation was stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    Steps(u64),
    Memory(u64),
    Timeout,
    Cancelled,
    Recursion,
    Nesting(usize),
    StringLength(usize),
    NumberSize,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Steps(n) => write!(f, "it took more than {n} steps"),
            Self::Memory(n) => write!(f, "it allocated more than {} KiB", n >> 10),
            Self::Timeout => f.write_str("it ran out of time"),
            Self::Cancelled => f.write_str("it was cancelled"),
            Self::Recursion => f.write_str("it recursed too deeply"),
            Self::Nesting(n) => write!(f, "it built a value nested deeper than {n} levels"),
            Self::StringLength(n) => write!(f, "it built a string longer than {n} bytes"),
            Self::NumberSize => f.write_str("it built an integer wider than 65536 bits"),
        }
    }
}

/// The payload of the unwind that stops an evaluation.
pub(crate) struct Interrupt;

/// Widest integer an evaluation may build; squaring a number repeatedly would otherwise make
/// each multiplication slower and bigger than the last.
pub(crate) const MAX_INTEGER_BITS: u64 = 1 << 16;

/// The budget of one evaluation. Not `Sync`: it lives on the evaluation thread.
pub(crate) struct Budget {
    steps: Cell<u64>,
    max_steps: u64,
    bytes: Cell<u64>,
    max_bytes: u64,
    next_clock: Cell<u64>,
    deadline: Instant,
    cancel: std::sync::Arc<AtomicBool>,
    stack_base: usize,
    max_stack: usize,
    pub(crate) max_depth: usize,
    pub(crate) max_string: usize,
    stopped: Cell<Option<Stop>>,
}

impl Budget {
    /// A fresh budget. `stack_base` is the address of a local near the top of the evaluation
    /// thread's stack; the evaluation may use `max_stack` bytes below it.
    pub(crate) fn new(
        limits: &JqLimits,
        deadline: Instant,
        cancel: std::sync::Arc<AtomicBool>,
        stack_base: usize,
    ) -> Self {
        Self {
            steps: Cell::new(0),
            max_steps: limits.max_steps,
            bytes: Cell::new(0),
            max_bytes: limits.max_alloc_bytes,
            next_clock: Cell::new(0),
            deadline,
            cancel,
            stack_base,
            max_stack: limits.stack_bytes / 2,
            max_depth: limits.max_depth,
            max_string: limits.max_string_bytes,
            stopped: Cell::new(None),
        }
    }

    /// Why the evaluation was stopped, if it was.
    pub(crate) fn stopped(&self) -> Option<Stop> {
        let stop = self.stopped.take();
        self.stopped.set(stop.clone());
        stop
    }

    /// Records why and unwinds out of the interpreter.
    pub(crate) fn stop(&self, why: Stop) -> ! {
        self.stopped.set(Some(why));
        std::panic::resume_unwind(Box::new(Interrupt))
    }

    /// Counts `n` steps; stops when the step budget, the deadline or a cancellation says so.
    pub(crate) fn step(&self, n: u64) {
        let steps = self.steps.get().saturating_add(n);
        self.steps.set(steps);
        if steps > self.max_steps {
            self.stop(Stop::Steps(self.max_steps));
        }
        if steps >= self.next_clock.get() {
            self.next_clock.set(steps + CLOCK_EVERY);
            self.check_clock();
        }
    }

    /// Stops when the deadline has passed or the caller gave up.
    pub(crate) fn check_clock(&self) {
        if self.cancel.load(Ordering::Relaxed) {
            self.stop(Stop::Cancelled);
        }
        if Instant::now() >= self.deadline {
            self.stop(Stop::Timeout);
        }
    }

    /// Counts `n` estimated bytes of newly built values.
    pub(crate) fn alloc(&self, n: u64) {
        let bytes = self.bytes.get().saturating_add(n);
        self.bytes.set(bytes);
        if bytes > self.max_bytes {
            self.stop(Stop::Memory(self.max_bytes));
        }
    }

    /// Stops when the evaluation has used more than its share of the thread's stack. The
    /// address of a local is a cheap and exact measure of the stack in use (it grows down on
    /// every platform Rust supports threads on, and `abs_diff` does not care).
    pub(crate) fn check_stack(&self) {
        let marker = 0u8;
        let here = (&raw const marker).addr();
        if self.stack_base.abs_diff(here) > self.max_stack {
            self.stop(Stop::Recursion);
        }
    }

    /// Stops when a string of `len` bytes would be too long.
    pub(crate) fn check_string(&self, len: usize) {
        if len > self.max_string {
            self.stop(Stop::StringLength(self.max_string));
        }
    }

    /// Charges for a value as if it had just been built: one step and its estimated bytes per
    /// node, walking shared parts as often as they are reachable (so a value that shares
    /// itself exponentially costs exponentially, and the walk stops at the budget). Stops when
    /// the value nests deeper than allowed or holds a string that is too long. Iterative, so
    /// the walk itself needs no stack.
    pub(crate) fn charge(&self, value: &Val) {
        if self.charge_leaf(value) {
            return;
        }
        let mut pending: Vec<(&Val, usize)> = vec![(value, 1)];
        while let Some((value, depth)) = pending.pop() {
            if depth > self.max_depth {
                self.stop(Stop::Nesting(self.max_depth));
            }
            if self.charge_leaf(value) {
                continue;
            }
            self.step(1);
            match value {
                Val::Arr(items) => {
                    self.alloc(ARRAY_BYTES + SLOT_BYTES * items.len() as u64);
                    pending.extend(items.iter().map(|item| (item, depth + 1)));
                }
                Val::Obj(entries) => {
                    self.alloc(OBJECT_BYTES + ENTRY_BYTES * entries.len() as u64);
                    for (key, item) in entries.iter() {
                        pending.push((key, depth + 1));
                        pending.push((item, depth + 1));
                    }
                }
                _ => {}
            }
        }
    }

    /// Charges a value that has no children and returns true, or returns false for arrays and
    /// objects.
    fn charge_leaf(&self, value: &Val) -> bool {
        match value {
            Val::Arr(_) | Val::Obj(_) => return false,
            Val::TStr(bytes) | Val::BStr(bytes) => {
                self.check_string(bytes.len());
                self.alloc(STRING_BYTES + bytes.len() as u64);
            }
            Val::Num(Num::BigInt(_) | Num::Dec(_)) => self.alloc(STRING_BYTES),
            Val::Null | Val::Bool(_) | Val::Num(_) => self.alloc(SLOT_BYTES),
        }
        self.step(1);
        true
    }

    /// Charges for copying the top level of a container that is shared (so an update or a
    /// concatenation has to copy it first).
    pub(crate) fn charge_copy(&self, value: &Val) {
        match value {
            Val::Arr(items) if jaq_json::Rc::strong_count(items) > 1 => {
                self.alloc(ARRAY_BYTES + SLOT_BYTES * items.len() as u64);
                self.step(1 + items.len() as u64 / 16);
            }
            Val::Obj(entries) if jaq_json::Rc::strong_count(entries) > 1 => {
                self.alloc(OBJECT_BYTES + ENTRY_BYTES * entries.len() as u64);
                self.step(1 + entries.len() as u64 / 16);
            }
            _ => {}
        }
    }

    /// Charges for `n` bytes of string data built at once.
    pub(crate) fn charge_string(&self, n: usize) {
        self.check_string(n);
        self.alloc(STRING_BYTES + n as u64);
        self.step(1 + n as u64 / 64);
    }
}
