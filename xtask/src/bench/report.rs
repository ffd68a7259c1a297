//! What a benchmark run found: each scenario's figures against their targets, its correctness
//! counters, the machine's limits; printed as one Markdown table (readable in a terminal and
//! pasted as it is into docs/BENCHMARKS.md) and written as JSON under target/bench/.

use std::fmt::Write as _;

use serde::Serialize;

/// How a measured figure compares with its target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "op", content = "value", rename_all = "snake_case")]
pub(crate) enum Target {
    /// At least this much (throughput).
    AtLeast(f64),
    /// At most this much (latency, errors, memory).
    AtMost(f64),
}

impl Target {
    pub(crate) fn met(self, measured: f64) -> bool {
        match self {
            Self::AtLeast(t) => measured >= t,
            Self::AtMost(t) => measured <= t,
        }
    }
}

/// The verdict on one figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Verdict {
    Pass,
    Short,
    /// No target (shown for context), or `--quick`, which judges no speed.
    Info,
}

/// A throughput's share of the machine's tightest relevant limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Share {
    /// The limit's name, e.g. `SQLite commits/s`.
    pub(crate) limit: String,
    /// The limit's value.
    pub(crate) limit_value: f64,
    /// measured / limit.
    pub(crate) fraction: f64,
}

/// One measured figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Figure {
    pub(crate) name: String,
    pub(crate) unit: &'static str,
    pub(crate) measured: f64,
    pub(crate) target: Option<Target>,
    pub(crate) verdict: Verdict,
    pub(crate) share: Option<Share>,
}

impl Figure {
    /// A figure judged against `target` (not judged when `judge` is false: `--quick`).
    pub(crate) fn new(
        name: impl Into<String>,
        unit: &'static str,
        measured: f64,
        target: Option<Target>,
        judge: bool,
    ) -> Figure {
        let verdict = match target {
            Some(t) if judge => {
                if t.met(measured) {
                    Verdict::Pass
                } else {
                    Verdict::Short
                }
            }
            _ => Verdict::Info,
        };
        Figure {
            name: name.into(),
            unit,
            measured,
            target,
            verdict,
            share: None,
        }
    }

    /// A figure with no target.
    pub(crate) fn info(name: impl Into<String>, unit: &'static str, measured: f64) -> Figure {
        Figure::new(name, unit, measured, None, false)
    }

    /// Adds the share of a limit.
    pub(crate) fn of_limit(mut self, limit: Option<(String, f64)>) -> Figure {
        if let Some((name, value)) = limit.filter(|(_, v)| *v > 0.0) {
            self.share = Some(Share {
                limit: name,
                limit_value: value,
                fraction: self.measured / value,
            });
        }
        self
    }
}

/// The correctness counters every scenario reports. A fast but lossy result is a failure.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Counters {
    /// Runs the harness asked for (requests sent, schedule ticks due).
    pub(crate) runs_requested: u64,
    /// Runs the database holds as succeeded.
    pub(crate) runs_recorded: u64,
    /// Calls the sink received (None when the plan calls no webhook).
    pub(crate) sink_calls: Option<u64>,
    /// Deliveries or runs seen more than once.
    pub(crate) duplicates: u64,
    /// Failed requests, failed runs, missing log rows or steps.
    pub(crate) errors: u64,
}

impl Counters {
    /// What is wrong with these counts.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.runs_recorded != self.runs_requested {
            out.push(format!(
                "{} runs requested but {} recorded as succeeded",
                self.runs_requested, self.runs_recorded
            ));
        }
        if let Some(calls) = self.sink_calls
            && calls != self.runs_requested
        {
            out.push(format!(
                "{} runs requested but the sink got {calls} calls",
                self.runs_requested
            ));
        }
        if self.duplicates > 0 {
            out.push(format!("{} duplicates", self.duplicates));
        }
        if self.errors > 0 {
            out.push(format!("{} errors", self.errors));
        }
        out
    }
}

/// One scenario's outcome.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ScenarioReport {
    /// A short stable id, e.g. `execute-sqlite` (what `--only` matches).
    pub(crate) id: String,
    /// What it measures, as the table says it.
    pub(crate) title: String,
    pub(crate) figures: Vec<Figure>,
    pub(crate) counters: Option<Counters>,
    /// Correctness failures (counters, harness errors). Empty means correct.
    pub(crate) problems: Vec<String>,
    /// Why it did not run, when it did not.
    pub(crate) skipped: Option<String>,
    /// Raw details (load phases, settings) for the JSON.
    pub(crate) details: serde_json::Value,
    /// How long the scenario took, setup included.
    pub(crate) seconds: f64,
}

impl ScenarioReport {
    pub(crate) fn new(id: &str, title: &str) -> ScenarioReport {
        ScenarioReport {
            id: id.to_owned(),
            title: title.to_owned(),
            figures: Vec::new(),
            counters: None,
            problems: Vec::new(),
            skipped: None,
            details: serde_json::Value::Null,
            seconds: 0.0,
        }
    }

    /// Sets the counters and records their problems.
    pub(crate) fn set_counters(&mut self, counters: Counters) {
        self.problems.extend(counters.problems());
        self.counters = Some(counters);
    }

    /// Whether it ran and every counter is right.
    pub(crate) fn correct(&self) -> bool {
        self.skipped.is_some() || self.problems.is_empty()
    }
}

/// Formats a number for the table: thousands separators, sensible precision.
pub(crate) fn number(value: f64) -> String {
    if !value.is_finite() {
        return "-".to_owned();
    }
    let decimals = if value.abs() >= 100.0 || value == value.trunc() {
        0
    } else if value.abs() >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{value:.decimals$}");
    let (sign, text) = text
        .strip_prefix('-')
        .map_or(("", text.as_str()), |t| ("-", t));
    let (int, frac) = text
        .split_once('.')
        .map_or((text, None), |(i, f)| (i, Some(f)));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

fn with_unit(value: f64, unit: &str) -> String {
    if unit.is_empty() {
        number(value)
    } else {
        format!("{} {unit}", number(value))
    }
}

fn target_text(target: Option<Target>, unit: &str) -> String {
    match target {
        Some(Target::AtLeast(v)) => format!(">= {}", with_unit(v, unit)),
        Some(Target::AtMost(v)) => format!("<= {}", with_unit(v, unit)),
        None => String::new(),
    }
}

/// The results table, as Markdown.
pub(crate) fn table(scenarios: &[ScenarioReport]) -> String {
    let mut out = String::new();
    out.push_str("| scenario | figure | target | measured | of limit | result |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for s in scenarios {
        if let Some(why) = &s.skipped {
            let _ = writeln!(out, "| {} | | | | | SKIPPED: {why} |", s.title);
            continue;
        }
        let mut first = true;
        for f in &s.figures {
            let title = if first { s.title.as_str() } else { "" };
            first = false;
            let share = f
                .share
                .as_ref()
                .map(|sh| {
                    format!(
                        "{:.0}% of {} ({})",
                        sh.fraction * 100.0,
                        sh.limit,
                        number(sh.limit_value)
                    )
                })
                .unwrap_or_default();
            let verdict = match f.verdict {
                Verdict::Pass => "pass",
                Verdict::Short => "**short**",
                Verdict::Info => "",
            };
            let _ = writeln!(
                out,
                "| {title} | {} | {} | {} | {share} | {verdict} |",
                f.name,
                target_text(f.target, f.unit),
                with_unit(f.measured, f.unit)
            );
        }
        if first && !s.problems.is_empty() {
            let _ = writeln!(
                out,
                "| {} | | | | | **not measured**: see correctness |",
                s.title
            );
        }
    }
    out
}

/// The correctness table, as Markdown.
pub(crate) fn counters_table(scenarios: &[ScenarioReport]) -> String {
    let mut out = String::new();
    out.push_str("| scenario | runs requested | runs recorded | sink calls | duplicates | errors | correct |\n");
    out.push_str("|---|---|---|---|---|---|---|\n");
    for s in scenarios.iter().filter(|s| s.skipped.is_none()) {
        let Some(c) = s.counters.clone() else {
            if !s.problems.is_empty() {
                let _ = writeln!(
                    out,
                    "| {} | | | | | | **NO**: {} |",
                    s.id,
                    s.problems.join("; ")
                );
            }
            continue;
        };
        let verdict = if s.problems.is_empty() {
            "yes".to_owned()
        } else {
            format!("**NO**: {}", s.problems.join("; "))
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {verdict} |",
            s.id,
            number(c.runs_requested as f64),
            number(c.runs_recorded as f64),
            c.sink_calls
                .map(|n| number(n as f64))
                .unwrap_or_else(|| "-".to_owned()),
            c.duplicates,
            c.errors
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_and_rounded() {
        let check = |v: f64, expect: &str| assert_eq!(number(v), expect, "{v}");
        check(0.0, "0");
        check(1234567.0, "1,234,567");
        check(2143.7, "2,144");
        check(999.4, "999");
        check(42.26, "42.3");
        check(4.256, "4.26");
        check(-1500.0, "-1,500");
        check(f64::NAN, "-");
    }

    #[test]
    fn figures_are_judged_only_when_asked() {
        let check = |target, measured, judge, expect| {
            assert_eq!(
                Figure::new("x", "", measured, Some(target), judge).verdict,
                expect,
                "{target:?} {measured}"
            );
        };
        check(Target::AtLeast(2000.0), 2000.0, true, Verdict::Pass);
        check(Target::AtLeast(2000.0), 1999.0, true, Verdict::Short);
        check(Target::AtMost(50.0), 50.0, true, Verdict::Pass);
        check(Target::AtMost(50.0), 50.1, true, Verdict::Short);
        check(Target::AtMost(50.0), 500.0, false, Verdict::Info);
        let f = Figure::info("runs/s", "", 500.0).of_limit(Some(("sink".into(), 2000.0)));
        assert_eq!(f.share.unwrap().fraction, 0.25);
        assert_eq!(
            Figure::info("a", "", 1.0)
                .of_limit(Some(("zero".into(), 0.0)))
                .share,
            None
        );
    }

    #[test]
    fn counters_find_loss_duplicates_and_errors() {
        let good = Counters {
            runs_requested: 10,
            runs_recorded: 10,
            sink_calls: Some(10),
            duplicates: 0,
            errors: 0,
        };
        assert!(good.problems().is_empty());
        let check = |c: Counters, expect: &str| {
            let problems = c.problems();
            assert!(
                problems.iter().any(|p| p.contains(expect)),
                "{problems:?} lacks {expect}"
            );
        };
        check(
            Counters {
                runs_recorded: 9,
                ..good.clone()
            },
            "10 runs requested but 9 recorded",
        );
        check(
            Counters {
                sink_calls: Some(11),
                ..good.clone()
            },
            "the sink got 11 calls",
        );
        check(
            Counters {
                duplicates: 1,
                ..good.clone()
            },
            "1 duplicates",
        );
        check(
            Counters {
                errors: 2,
                ..good.clone()
            },
            "2 errors",
        );
        assert!(
            Counters {
                sink_calls: None,
                ..good
            }
            .problems()
            .is_empty()
        );
    }

    #[test]
    fn tables_show_verdicts_skips_and_problems() {
        let mut ok = ScenarioReport::new("execute-sqlite", "3-step, SQLite");
        ok.figures.push(
            Figure::new("runs/s", "", 2500.0, Some(Target::AtLeast(2000.0)), true)
                .of_limit(Some(("sink".into(), 10000.0))),
        );
        ok.figures.push(Figure::new(
            "p99",
            "ms",
            60.0,
            Some(Target::AtMost(50.0)),
            true,
        ));
        ok.set_counters(Counters {
            runs_requested: 5,
            runs_recorded: 4,
            ..Counters::default()
        });
        let mut skipped = ScenarioReport::new("execute-pg", "3-step, PostgreSQL");
        skipped.skipped = Some("PostgreSQL unreachable".into());
        let all = [ok, skipped];
        let t = table(&all);
        assert!(
            t.contains(
                "| 3-step, SQLite | runs/s | >= 2,000 | 2,500 | 25% of sink (10,000) | pass |"
            ),
            "{t}"
        );
        assert!(
            t.contains("|  | p99 | <= 50 ms | 60 ms |  | **short** |"),
            "{t}"
        );
        assert!(t.contains("SKIPPED: PostgreSQL unreachable"), "{t}");
        let c = counters_table(&all);
        assert!(
            c.contains(
                "| execute-sqlite | 5 | 4 | - | 0 | 0 | **NO**: 5 runs requested but 4 recorded"
            ),
            "{c}"
        );
        assert!(!c.contains("execute-pg"), "{c}");
        assert!(!all[0].correct());
        assert!(all[1].correct());
    }
}
