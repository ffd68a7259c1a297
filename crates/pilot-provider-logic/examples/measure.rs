//! Measures the evaluator in a release build: evaluations per second for a simple transform,
//! and how long each runaway expression runs and how much memory the process reaches under
//! the default limits.
//!
//! ```text
//! cargo run --release -p pilot-provider-logic --example measure
//! ```
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use pilot_provider_logic::JqEngine;
use serde_json::{Value, json};

/// Peak resident memory of this process, from Linux's /proc (0 elsewhere).
fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
        .unwrap_or(0);
    kib >> 10
}

#[tokio::main]
async fn main() {
    let engine = JqEngine::default();
    let input = json!({"a": 1, "b": {"c": [1, 2, 3]}, "name": "x"});
    engine.single(".a", input.clone()).await.unwrap();

    for concurrency in [1usize, 4, 16] {
        let count = 100_000usize;
        let start = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let engine = engine.clone();
                let input = input.clone();
                tokio::spawn(async move {
                    for _ in 0..count / concurrency {
                        engine.single(".a", input.clone()).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let rate = count as f64 / start.elapsed().as_secs_f64();
        println!("`.a` with {concurrency:>2} callers: {rate:>9.0} evaluations/s");
    }

    let runaways = [
        "def f: f; f",
        "def f: 1 + f; f",
        "[range(1e9)]",
        "\"x\" * 1000000000",
        "[limit(1e9; repeat(1))]",
        "reduce range(40) as $i ([1]; . + .)",
        "reduce range(60) as $i (1; [., .]) | tojson",
        "reduce range(100000) as $i (null; [.])",
        "[range(1e6)] as $a | [range(100) | $a] | length",
    ];
    println!("peak RSS before runaways: {} MiB", peak_rss_mib());
    for expr in runaways {
        let start = Instant::now();
        let result = engine.all(expr, Value::Null).await;
        println!(
            "{expr:48} {:>7.0} ms  peak RSS {:>4} MiB  {}",
            start.elapsed().as_secs_f64() * 1000.0,
            peak_rss_mib(),
            result.err().map(|e| e.to_string()).unwrap_or_default()
        );
    }
}
