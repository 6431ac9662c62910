//! The domain's request counters on PostgreSQL (docs/design.md §4 "Counters", §5d): every node
//! adds what it counted to the one `counters` table ([`atp_wasm::relay::counters::flush`]), so
//! `stats` and `metrics` on any node show the whole domain.

use atp_wasm::relay::counters::STARTED_AT;

use super::{PgError, PgStore};

impl PgStore {
    /// Adds `deltas` to the counters and records `now` as their start unless one is there: one
    /// upsert statement over the names sorted, so two nodes flushing at once lock the rows in the
    /// same order and never deadlock.
    pub async fn add_counters(&self, now: i64, deltas: &[(String, u64)]) -> Result<(), PgError> {
        let mut rows: Vec<(&str, i64)> =
            deltas.iter().map(|(k, v)| (k.as_str(), (*v).min(i64::MAX as u64) as i64)).collect();
        if !rows.iter().any(|(k, _)| *k == STARTED_AT) {
            rows.push((STARTED_AT, now));
        }
        rows.sort_unstable();
        let (names, values): (Vec<&str>, Vec<i64>) = rows.into_iter().unzip();
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "INSERT INTO counters(name, value)
                 SELECT n, v FROM unnest($1::text[], $2::bigint[]) AS t(n, v) ORDER BY n COLLATE \"C\"
                 ON CONFLICT (name) DO UPDATE
                 SET value = CASE WHEN counters.name = $3 THEN counters.value ELSE counters.value + excluded.value END",
            )
            .await?;
        c.execute(&st, &[&names, &values, &STARTED_AT]).await?;
        Ok(())
    }

    /// The domain's counters by name.
    pub async fn counters(&self) -> Result<Vec<(String, u64)>, PgError> {
        let c = self.client().await?;
        let st = c.prepare_cached("SELECT name, value FROM counters ORDER BY name").await?;
        Ok(c.query(&st, &[]).await?.iter().map(|r| (r.get(0), r.get::<_, i64>(1).max(0) as u64)).collect())
    }
}
