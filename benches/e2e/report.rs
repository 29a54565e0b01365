//! The results as one table, each next to its target from issue 6 when it has
//! one. Targets are compared, never asserted: a missed target is a finding to
//! report, not a failed build. Printed, and written to `target/bench-report.md`
//! with the machine and the command that reproduces it.

use crate::machine::Machine;
use std::fmt::Write;
use std::path::PathBuf;

pub struct Row {
    area: &'static str,
    what: String,
    result: String,
    target: String,
    verdict: String,
}

#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    /// A measurement without a target.
    pub fn info(&mut self, area: &'static str, what: impl Into<String>, result: impl Into<String>) {
        self.rows.push(Row { area, what: what.into(), result: result.into(), target: String::new(), verdict: String::new() });
    }

    /// A measurement whose `(value, target)` should have value ≥ target.
    pub fn at_least(&mut self, area: &'static str, what: impl Into<String>, result: impl Into<String>, (value, target): (f64, f64), target_text: &str) {
        let verdict = if value >= target {
            "met".to_string()
        } else if value > 0.0 {
            format!("**missed**: {:.1}× short ({:.0}% of target)", target / value, 100.0 * value / target)
        } else {
            "**missed**".to_string()
        };
        self.rows.push(Row { area, what: what.into(), result: result.into(), target: target_text.into(), verdict });
    }

    /// A measurement whose `(value, target)` should have value ≤ target; `unit` formats the excess.
    pub fn at_most(
        &mut self,
        area: &'static str,
        what: impl Into<String>,
        result: impl Into<String>,
        (value, target): (f64, f64),
        target_text: &str,
        unit: fn(f64) -> String,
    ) {
        let verdict = if value <= target { "met".to_string() } else { format!("**missed** by {} ({:.1}× the target)", unit(value - target), value / target) };
        self.rows.push(Row { area, what: what.into(), result: result.into(), target: target_text.into(), verdict });
    }

    /// A line under the table (loss, noise, what a number means).
    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    pub fn table(&self) -> String {
        let mut s = String::from("| area | measurement | result | target | verdict |\n|---|---|---|---|---|\n");
        for r in &self.rows {
            let _ = writeln!(s, "| {} | {} | {} | {} | {} |", r.area, r.what, r.result, r.target, r.verdict);
        }
        s
    }

    pub fn markdown(&self, machine: &Machine, mode: &str, elapsed_s: f64) -> String {
        let mut s = String::from("# journeyd benchmark report\n\n");
        let _ = writeln!(s, "Reproduce with `make bench` (or `cargo bench --bench e2e`; `JOURNEYD_BENCH_QUICK=1` for a smoke run,");
        let _ = writeln!(s, "`JOURNEYD_BENCH_HUGE=1` for 10M customers). Engine per core in detail: `cargo bench --bench engine`.\n");
        let _ = writeln!(s, "- mode: {mode}, {elapsed_s:.0} s");
        let _ = writeln!(s, "- machine: {} cores, {}, {:.1} GiB RAM, Linux {}", machine.cores, machine.cpu, machine.memory_gib, machine.kernel);
        let _ = writeln!(s, "- load average at start: {} (other work on the machine skews every number)", machine.load_at_start);
        let _ = writeln!(s, "- {}; journeyd {} at {}\n", machine.nats_server, env!("CARGO_PKG_VERSION"), machine.commit);
        s.push_str(&self.table());
        if !self.notes.is_empty() {
            s.push('\n');
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        s
    }
}

/// Where cargo puts build output: the bench executable is `<target>/<profile>/deps/e2e-…`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(PathBuf::from))
        .filter(|d| d.join("CACHEDIR.TAG").exists())
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

pub fn rate(per_s: f64) -> String {
    if per_s >= 1e6 {
        format!("{:.2}M/s", per_s / 1e6)
    } else {
        format!("{:.0}k/s", per_s / 1e3)
    }
}

pub fn micros(ns: f64) -> String {
    if ns.abs() >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.0} µs", ns / 1e3)
    }
}

pub fn bytes(b: f64) -> String {
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.0} MiB", b / (1024.0 * 1024.0))
    } else {
        format!("{b:.0} B")
    }
}
