//! Request authentication (docs/protocol.md §6.2, §7): an agent's HTTP Basic credential, and the
//! admin bearer token.
//!
//! Fixes over the reference: the Basic user name is parsed and lowercased as an agent id before
//! the lookup (`Alice@alpha.test` works), the scheme name is case-insensitive, secrets are
//! compared in constant time, and an unknown agent costs the same argon2 run as a wrong password,
//! so response times do not reveal which agents exist. A verified credential is cached
//! ([`super::credentials::CredentialCache`]).

use crate::env::{Clock, Resolver};
use crate::error::{ErrorCode, Rejection};
use crate::identity::AgentId;
use crate::relay::credentials::{secrets_equal, PasswordHasher};
use crate::relay::request::ApiRequest;
use crate::relay::store::{AgentStore, MessageStore};
use crate::relay::stream::InboxWatch;
use crate::relay::{Registration, Relay};

impl<S: AgentStore + MessageStore, R: Resolver, H: PasswordHasher, C: Clock, W: InboxWatch> Relay<'_, S, R, H, C, W> {
    /// Checks `Authorization: Basic base64(agent-id:password)` and returns the agent. `missing`
    /// is the reference's text for an absent credential (it differs between routes).
    pub async fn agent(&self, req: &ApiRequest, missing: &'static str) -> Result<AgentId, Rejection> {
        let stats = &self.state.stats;
        let fail = |msg: &'static str| Rejection::new(ErrorCode::AuthFailed, msg);
        let (user, password) = req.basic().ok_or_else(|| fail(missing))??;
        let Ok(id) = AgentId::parse(&user) else {
            stats.credential_fail.inc();
            return Err(fail("Credential verification failed"));
        };
        let key = id.to_string();
        let now = self.clock.now();
        let cache = &self.state.credentials;
        let tag = cache.tag(&key, &password);
        if cache.is_fresh(&tag, now) {
            stats.credential_cache_hits.inc();
            stats.credential_pass.inc();
            return Ok(id);
        }
        // Not cached: an argon2 run, unless this address has failed too often (limits.rs).
        self.state.logins.check(req.source_ip, &key, now)?;
        let hash = self.store.agent_hash(&key).await?;
        if !self.hasher.verify(&password, hash.as_deref()).await {
            stats.credential_fail.inc();
            self.state.logins.failed(req.source_ip, &key, self.clock.now());
            return Err(fail("Credential verification failed"));
        }
        cache.remember(tag, now);
        stats.credential_pass.inc();
        Ok(id)
    }

    /// Checks `Authorization: Bearer <admin token>` (docs/protocol.md §6.2).
    pub fn admin(&self, req: &ApiRequest) -> Result<(), Rejection> {
        let Some(token) = &self.cfg.admin_token else {
            return Err(Rejection::new(
                ErrorCode::Forbidden,
                "Admin access not configured (set admin_token in server config)",
            ));
        };
        match req.credentials("Bearer") {
            None => Err(Rejection::new(ErrorCode::AuthFailed, "Admin authentication required")),
            Some(given) if secrets_equal(given, token) => Ok(()),
            Some(_) => Err(Rejection::new(ErrorCode::Forbidden, "Invalid admin token")),
        }
    }

    /// Whether `POST register` may be called: the registration policy.
    pub fn may_register(&self, req: &ApiRequest) -> Result<(), Rejection> {
        match self.cfg.registration {
            Registration::Open => Ok(()),
            Registration::Token => self.admin(req),
            Registration::Closed => Err(Rejection::new(ErrorCode::Forbidden, "Registration is closed")),
        }
    }
}
