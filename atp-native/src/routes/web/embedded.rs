//! The web app embedded at build time (`build.rs` writes the table from `www/dist`; empty when the
//! app was not built).

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// The contents of the embedded file at `path` (relative, `/`-separated).
pub fn get(path: &str) -> Option<&'static [u8]> {
    FILES.binary_search_by(|(p, _)| (*p).cmp(path)).ok().map(|i| FILES[i].1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_table_is_sorted_for_lookups() {
        assert!(super::FILES.windows(2).all(|w| w[0].0 < w[1].0));
        for (path, data) in super::FILES {
            assert_eq!(super::get(path), Some(*data));
        }
        assert_eq!(super::get("no/such/file"), None);
    }
}
