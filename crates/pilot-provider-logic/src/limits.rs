//! The bounds every jq evaluation runs under, in one plain struct the binary fills from its
//! configuration. Defaults suit a small server; each field says what it protects.

use std::time::Duration;

/// Bounds on one jq evaluation and on the evaluator as a whole.
///
/// Time is bounded by [`timeout`](Self::timeout) (wall clock) and [`max_steps`](Self::max_steps)
/// (interpreter work); memory by [`max_alloc_bytes`](Self::max_alloc_bytes) and
/// [`max_string_bytes`](Self::max_string_bytes); the native stack by
/// [`max_expression_bytes`](Self::max_expression_bytes), the value nesting limit and the
/// recursion guard that keeps an evaluation within half of [`stack_bytes`](Self::stack_bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JqLimits {
    /// Wall-clock budget of one evaluation, from the moment it is submitted (waiting for a free
    /// evaluation thread counts).
    pub timeout: Duration,
    /// Interpreter steps one evaluation may take: one per filter evaluated, plus one per value
    /// node it builds or inspects.
    pub max_steps: u64,
    /// Estimated bytes one evaluation may allocate for the values it builds (never refunded).
    pub max_alloc_bytes: u64,
    /// Longest string an evaluation may build.
    pub max_string_bytes: usize,
    /// Deepest nesting of arrays and objects an evaluation may build or receive as input.
    pub max_depth: usize,
    /// Deepest nesting of an output (step outputs are stored as JSON and read back with
    /// serde_json, whose default limit is 128).
    pub max_output_depth: usize,
    /// Most outputs an evaluation may return (with `all: true`).
    pub max_outputs: usize,
    /// Most bytes (as compact JSON) the outputs of one evaluation may take together.
    pub max_output_bytes: usize,
    /// Longest expression accepted. The parser recurses once per nesting level, so this bounds
    /// the stack the parser needs.
    pub max_expression_bytes: usize,
    /// Evaluation threads: at most this many evaluations run at once, and a runaway one can
    /// never hold more threads than this.
    pub workers: usize,
    /// Stack of each evaluation thread (raised to 8 KiB per byte of `max_expression_bytes`
    /// if smaller, which parsing the deepest accepted expression needs). Evaluations stop when
    /// they use half of it; the other half is headroom for recursive work on values.
    pub stack_bytes: usize,
    /// Compiled expressions kept for reuse.
    pub cache_entries: usize,
}

impl Default for JqLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(2),
            max_steps: 10_000_000,
            max_alloc_bytes: 128 << 20,
            max_string_bytes: 4 << 20,
            max_depth: 512,
            max_output_depth: 128,
            max_outputs: 100_000,
            max_output_bytes: 8 << 20,
            max_expression_bytes: 8 << 10,
            workers: 4,
            stack_bytes: 64 << 20,
            cache_entries: 512,
        }
    }
}
