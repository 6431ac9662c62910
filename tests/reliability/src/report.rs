//! Results: one row per scenario, kept as JSON lines (so that several runs of the binary add up
//! to one report) and printed as a Markdown table.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::load::Tally;
use crate::Error;

/// One scenario's result.
#[derive(Debug, Clone)]
pub struct Row(pub Value);

impl Row {
    pub fn new(scenario: &str, trials: u32, t: &Tally, time: Duration, pass: bool, notes: Vec<String>) -> Row {
        Row(json!({
            "scenario": scenario, "trials": trials, "accepted": t.accepted, "delivered": t.delivered,
            "lost": t.lost, "duplicates": t.duplicates, "seconds": time.as_secs_f64(),
            "result": if pass { "pass" } else { "FAIL" }, "notes": notes,
        }))
    }

    pub fn skipped(scenario: &str, why: &str) -> Row {
        Row(json!({"scenario": scenario, "trials": 0, "result": "skipped", "notes": [why]}))
    }

    pub fn failed(scenario: &str, error: &str) -> Row {
        Row(json!({"scenario": scenario, "trials": 0, "result": "FAIL", "notes": [error]}))
    }

    pub fn passed(&self) -> bool {
        self.0["result"] != "FAIL"
    }
}

/// Appends rows to a JSON-lines file.
pub fn append(path: &Path, rows: &[Row]) -> Result<(), Error> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    for r in rows {
        writeln!(f, "{}", r.0)?;
    }
    Ok(())
}

/// Reads the rows of a JSON-lines file.
pub fn read(path: &Path) -> Result<Vec<Row>, Error> {
    let text = std::fs::read_to_string(path)?;
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| Ok(Row(serde_json::from_str(l)?))).collect()
}

/// The Markdown table (and the notes under it).
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | trials | accepted | delivered | lost | duplicates | time | result |\n\
         |---|---:|---:|---:|---:|---:|---:|---|\n",
    );
    let n = |v: &Value| v.as_u64().map(|x| x.to_string()).unwrap_or_else(|| "–".into());
    for Row(r) in rows {
        let time = r["seconds"].as_f64().map(|s| format!("{s:.0} s")).unwrap_or_else(|| "–".into());
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r["scenario"].as_str().unwrap_or("?"),
            n(&r["trials"]),
            n(&r["accepted"]),
            n(&r["delivered"]),
            n(&r["lost"]),
            n(&r["duplicates"]),
            time,
            r["result"].as_str().unwrap_or("?"),
        ));
    }
    out.push('\n');
    for Row(r) in rows {
        if let Some(notes) = r["notes"].as_array().filter(|a| !a.is_empty()) {
            let notes: Vec<&str> = notes.iter().filter_map(Value::as_str).collect();
            out.push_str(&format!("- **{}**: {}\n", r["scenario"].as_str().unwrap_or("?"), notes.join("; ")));
        }
    }
    out
}
