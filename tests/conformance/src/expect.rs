//! Expected failures: case names a target is known to get wrong, reported as XFAIL (not hidden).
//!
//! File format (`--expect-fail FILE`, and the built-in lists under `expect/`): one case name per
//! line, optionally followed by whitespace and a reason; `#` starts a comment.

use std::collections::BTreeMap;

use crate::kit::Target;

/// Case name → reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpectedFailures(pub BTreeMap<String, String>);

impl ExpectedFailures {
    pub fn parse(text: &str) -> Self {
        let mut m = BTreeMap::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (name, reason) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            m.insert(name.to_owned(), reason.trim().to_owned());
        }
        ExpectedFailures(m)
    }

    /// The built-in list of a target.
    pub fn builtin(target: Target) -> Self {
        match target {
            Target::Reference => Self::parse(include_str!("../expect/reference.txt")),
            Target::Atp | Target::Worker => Self::default(),
        }
    }

    pub fn extend(&mut self, other: ExpectedFailures) {
        self.0.extend(other.0);
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// Names that match no case (typos in a list).
    pub fn unknown<'a>(&'a self, names: &[&str]) -> Vec<&'a str> {
        self.0.keys().map(String::as_str).filter(|n| !names.contains(n)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_reasons_and_comments() {
        let e = ExpectedFailures::parse("# header\n\na.b   because\n  c.d\nx # trailing\n");
        assert_eq!(e.0.len(), 3);
        assert_eq!(e.0["a.b"], "because");
        assert!(e.contains("c.d") && e.contains("x"));
        let names: Vec<&str> = crate::cases::all().iter().map(|c| c.name).collect();
        let builtin = ExpectedFailures::builtin(Target::Reference);
        assert!(builtin.unknown(&names).is_empty(), "{:?}", builtin.unknown(&names));
        assert!(builtin.0.len() > 10);
    }
}
