//! All cases, in run order: routes (which also exercise local submission), the transfer matrix,
//! TLS, and last the cases that may leave a faulty server unusable.

use crate::kit::Case;

pub mod push;
pub mod routes;
pub mod tls;
pub mod transfer;

/// Every case of the kit.
pub fn all() -> Vec<Case> {
    let mut v = routes::cases();
    v.extend(push::cases());
    v.extend(transfer::cases());
    v.extend(tls::cases());
    v.extend(routes::last_cases());
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_unique_and_grouped() {
        let all = super::all();
        let mut names: Vec<&str> = all.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len(), "duplicate case names");
        for c in &all {
            assert!(["route.", "transfer.", "tls."].iter().any(|p| c.name.starts_with(p)), "{}", c.name);
            assert!(!c.section.is_empty() && !c.expect.is_empty(), "{}", c.name);
        }
        assert!(all.iter().filter(|c| c.name.starts_with("transfer.")).count() >= 45);
    }
}
