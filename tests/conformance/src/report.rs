//! Running the cases and the table: `case | section | expected | got | result`, then a summary.

use std::time::{Duration, Instant};

use crate::expect::ExpectedFailures;
use crate::kit::{Case, Ctx, Outcome, Verdict};

/// A case's result against the expectations of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Result {
    Pass,
    /// An unexpected failure: the run fails.
    Fail,
    /// A failure on the expected-failure list.
    XFail,
    /// A pass of a case on the expected-failure list (the list is stale; reported, not fatal).
    XPass,
    /// Not applicable to this target, with the reason in `got`.
    NotApplicable,
}

impl Result {
    pub fn label(self) -> &'static str {
        match self {
            Result::Pass => "PASS",
            Result::Fail => "FAIL",
            Result::XFail => "XFAIL",
            Result::XPass => "XPASS",
            Result::NotApplicable => "N/A",
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: &'static str,
    pub section: &'static str,
    pub expect: &'static str,
    pub got: String,
    pub result: Result,
    pub took: Duration,
}

/// A whole run.
#[derive(Debug, Clone)]
pub struct Report {
    pub rows: Vec<Row>,
    pub took: Duration,
}

/// The longest a case may take.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `cases` one after the other.
pub async fn run(cx: &Ctx, cases: &[Case], xfail: &ExpectedFailures) -> Report {
    let started = Instant::now();
    let mut rows = Vec::new();
    for c in cases {
        if !cx.cfg.only.is_empty() && !cx.cfg.only.iter().any(|p| c.name.contains(p.as_str())) {
            continue;
        }
        let t = Instant::now();
        let outcome = match tokio::time::timeout(CASE_TIMEOUT, (c.run)(cx)).await {
            Ok(o) => o,
            Err(_) => Outcome::fail(format!("no outcome within {} s", CASE_TIMEOUT.as_secs())),
        };
        let expected_fail = xfail.contains(c.name);
        let result = match (outcome.verdict, expected_fail) {
            (Verdict::NotApplicable, _) => Result::NotApplicable,
            (Verdict::Pass, false) => Result::Pass,
            (Verdict::Pass, true) => Result::XPass,
            (Verdict::Fail, false) => Result::Fail,
            (Verdict::Fail, true) => Result::XFail,
        };
        rows.push(Row {
            name: c.name,
            section: c.section,
            expect: c.expect,
            got: outcome.got,
            result,
            took: t.elapsed(),
        });
    }
    Report { rows, took: started.elapsed() }
}

impl Report {
    pub fn count(&self, r: Result) -> usize {
        self.rows.iter().filter(|row| row.result == r).count()
    }

    /// True when no case failed unexpectedly.
    pub fn ok(&self) -> bool {
        self.count(Result::Fail) == 0
    }

    pub fn summary(&self) -> String {
        format!(
            "{} cases: {} passed, {} failed, {} xfail, {} xpass, {} n/a in {:.1} s",
            self.rows.len(),
            self.count(Result::Pass),
            self.count(Result::Fail),
            self.count(Result::XFail),
            self.count(Result::XPass),
            self.count(Result::NotApplicable),
            self.took.as_secs_f64()
        )
    }

    /// The table and the summary line.
    pub fn table(&self) -> String {
        const GOT: usize = 60;
        let clip = |s: &str, n: usize| -> String {
            let s = s.replace(['\n', '\r'], " ");
            if s.chars().count() > n {
                format!("{}…", s.chars().take(n - 1).collect::<String>())
            } else {
                s
            }
        };
        let w_name = self.rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
        let w_sec = self.rows.iter().map(|r| r.section.chars().count()).max().unwrap_or(7).max(7);
        let w_exp = self.rows.iter().map(|r| r.expect.chars().count()).max().unwrap_or(8).max(8);
        let w_got = self.rows.iter().map(|r| clip(&r.got, GOT).chars().count()).max().unwrap_or(3).max(3);
        let mut out = String::new();
        let line = |a: &str, b: &str, c: &str, d: &str, e: &str| {
            format!("{a:<w_name$} | {b:<w_sec$} | {c:<w_exp$} | {d:<w_got$} | {e}\n")
        };
        out.push_str(&line("case", "section", "expected", "got", "result"));
        out.push_str(&format!(
            "{}-+-{}-+-{}-+-{}-+-{}\n",
            "-".repeat(w_name),
            "-".repeat(w_sec),
            "-".repeat(w_exp),
            "-".repeat(w_got),
            "-".repeat(6)
        ));
        for r in &self.rows {
            out.push_str(&line(r.name, r.section, r.expect, &clip(&r.got, GOT), r.result.label()));
        }
        out.push_str(&format!("\n{}\n", self.summary()));
        out
    }

    /// Full observations of the rows that did not pass (the table clips them).
    pub fn details(&self) -> String {
        let mut out = String::new();
        for r in self.rows.iter().filter(|r| matches!(r.result, Result::Fail | Result::XPass)) {
            out.push_str(&format!("{} {}: {}\n", r.result.label(), r.name, r.got));
        }
        out
    }
}
