//! What the benchmark reads about the machine and its processes from /proc: the machine's
//! description for the report, and a process's memory and wake-ups for the idle scenario.

use std::process::Command;

use serde::Serialize;

/// The machine the figures were measured on.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Machine {
    pub(crate) cores: usize,
    pub(crate) cpu: String,
    pub(crate) memory_mib: u64,
    pub(crate) kernel: String,
    /// The 1-minute load average when the run started (other work on a shared machine).
    pub(crate) load_at_start: f64,
}

impl Machine {
    pub(crate) fn describe() -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let memory_mib = meminfo_kib(&read("/proc/meminfo"), "MemTotal").unwrap_or(0) / 1024;
        Machine {
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            cpu,
            memory_mib,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            load_at_start: read("/proc/loadavg")
                .split_whitespace()
                .next()
                .and_then(|l| l.parse().ok())
                .unwrap_or(0.0),
        }
    }
}

/// A `Name:   123 kB` field of /proc/meminfo or /proc/<pid>/status.
fn meminfo_kib(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// A process's resident memory in KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    meminfo_kib(
        &std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        "VmRSS",
    )
}

/// Context switches of all of a process's threads so far: each is a thread waking up (or being
/// preempted), so on an idle server their rate shows polling.
pub(crate) fn context_switches(pid: u32) -> Option<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let status = std::fs::read_to_string(entry.ok()?.path().join("status")).ok()?;
        total += meminfo_kib(&status, "voluntary_ctxt_switches").unwrap_or(0);
        total += meminfo_kib(&status, "nonvoluntary_ctxt_switches").unwrap_or(0);
    }
    Some(total)
}

/// CPU time (user + system) a process has used so far, in seconds: fields 14 and 15 of
/// /proc/<pid>/stat, in clock ticks of 1/100 s (Linux's USER_HZ on every common platform).
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|ticks| ticks as f64 / 100.0)
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3, so fields 14 and 15 are at 11 and 12.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The first line a command prints, or `unknown`.
pub(crate) fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The version of `package` in a Cargo.lock.
pub(crate) fn locked_version(lock: &str, package: &str) -> Option<String> {
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == format!("name = \"{package}\"") {
            let version = lines
                .next()?
                .trim()
                .strip_prefix("version = \"")?
                .strip_suffix('"')?;
            return Some(version.to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields_parse() {
        let status = "Name:\tx\nVmRSS:\t   12345 kB\nvoluntary_ctxt_switches:\t7\nnonvoluntary_ctxt_switches:\t3\n";
        assert_eq!(meminfo_kib(status, "VmRSS"), Some(12345));
        assert_eq!(meminfo_kib(status, "voluntary_ctxt_switches"), Some(7));
        assert_eq!(meminfo_kib(status, "VmSwap"), None);
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        assert!(context_switches(me).is_some());
        assert_eq!(rss_kib(u32::MAX), None);
    }

    #[test]
    fn cpu_ticks_parse() {
        let stat = "42 (a b) S 1 42 42 0 -1 4194560 100 0 0 0 250 17 0 0 20 0 11 0 5 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(267));
        assert_eq!(parse_cpu_ticks("42 (x) S 1"), None);
        assert!(cpu_seconds(std::process::id()).is_some());
    }

    #[test]
    fn locked_versions_are_found() {
        let lock = "[[package]]\nname = \"libsqlite3-sys\"\nversion = \"0.35.0\"\n\n[[package]]\nname = \"x\"\nversion = \"1.0.0\"\n";
        assert_eq!(
            locked_version(lock, "libsqlite3-sys").as_deref(),
            Some("0.35.0")
        );
        assert_eq!(locked_version(lock, "nope"), None);
        let machine = Machine::describe();
        assert!(machine.cores >= 1 && machine.memory_mib > 0);
    }
}
