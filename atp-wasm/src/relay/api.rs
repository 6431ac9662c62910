//! The API definition (docs/protocol.md §6.1): every route under [`PREFIX`] once — its method,
//! path, who may call it and how large its body may be — used by the native router, the worker
//! router and the client alike. Adding a route is one entry in [`ROUTES`] plus its handler in
//! [`super::Relay::dispatch`] (docs/design.md §1 "How to add a route").

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, Rejection};
use crate::http::Method;

/// The path prefix of every route.
pub const PREFIX: &str = "/.well-known/atp/v1";

/// Largest body of a request that is not a message (registration, acknowledgements).
pub const MAX_SMALL_BODY: usize = 16 * 1024;

/// Who may call a route (docs/protocol.md §6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Anyone.
    Public,
    /// An agent of this server, with its Basic credential.
    Agent,
    /// The operator, with the admin bearer token.
    Admin,
    /// `POST message`: a local sender's Basic credential, or a remote server checked by ATS/ATK.
    Sender,
    /// `POST register`: decided by the registration policy (open, admin token, closed).
    Registration,
}

/// One route of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The route's name, as in `docs/protocol.md` §6.1 (`message`, `messages`, …).
    pub name: &'static str,
    pub method: Method,
    /// The path after [`PREFIX`], starting with `/`.
    pub path: &'static str,
    pub auth: Auth,
    /// Largest request body read; a larger one is refused before it is buffered.
    pub max_body: usize,
}

impl Route {
    /// The route's full path (`/.well-known/atp/v1/<path>`).
    pub fn full_path(&self) -> String {
        format!("{PREFIX}{}", self.path)
    }

    /// The most body bytes read for this route: its own limit, and never less than
    /// [`MAX_SMALL_BODY`] (a stray body on a `GET` is read and ignored, as before).
    pub fn body_limit(&self) -> usize {
        self.max_body.max(MAX_SMALL_BODY)
    }

    /// The route's URL under a server's base URL (`https://host:port`, no trailing slash).
    pub fn url(&self, base: &str) -> String {
        format!("{}{PREFIX}{}", base.trim_end_matches('/'), self.path)
    }
}

const fn route(name: &'static str, method: Method, path: &'static str, auth: Auth) -> Route {
    Route { name, method, path, auth, max_body: 0 }
}

/// `POST message`: submission by a local agent or transfer from another server.
pub const MESSAGE: Route =
    Route { max_body: crate::MAX_MESSAGE_SIZE, ..route("message", Method::Post, "/message", Auth::Sender) };
/// `POST register`: a new agent.
pub const REGISTER: Route =
    Route { max_body: MAX_SMALL_BODY, ..route("register", Method::Post, "/register", Auth::Registration) };
/// `GET messages`: the agent's inbox after a cursor.
pub const MESSAGES: Route = route("messages", Method::Get, "/messages", Auth::Agent);
/// `GET messages/stream`: the agent's inbox as server-sent events (docs/protocol.md §6.5).
pub const STREAM: Route = route("messages/stream", Method::Get, "/messages/stream", Auth::Agent);
/// `POST messages/ack`: removes messages from the agent's inbox (docs/protocol.md §6.5).
pub const ACK: Route =
    Route { max_body: MAX_SMALL_BODY, ..route("messages/ack", Method::Post, "/messages/ack", Auth::Agent) };
/// `GET whoami`: the authenticated agent's id.
pub const WHOAMI: Route = route("whoami", Method::Get, "/whoami", Auth::Agent);
/// `GET agents` (admin): registered agents.
pub const AGENTS: Route = route("agents", Method::Get, "/agents", Auth::Admin);
/// `GET stats` (admin): counters, the reference's shape.
pub const STATS: Route = route("stats", Method::Get, "/stats", Auth::Admin);
/// `GET inspect?nonce=` (admin): one message's state.
pub const INSPECT: Route = route("inspect", Method::Get, "/inspect", Auth::Admin);
/// `GET metrics` (admin): Prometheus text.
pub const METRICS: Route = route("metrics", Method::Get, "/metrics", Auth::Admin);
/// `GET capabilities`.
pub const CAPABILITIES: Route = route("capabilities", Method::Get, "/capabilities", Auth::Public);
/// `GET health`.
pub const HEALTH: Route = route("health", Method::Get, "/health", Auth::Public);

/// Every route, once.
pub const ROUTES: &[Route] =
    &[MESSAGE, REGISTER, MESSAGES, STREAM, ACK, WHOAMI, AGENTS, STATS, INSPECT, METRICS, CAPABILITIES, HEALTH];

/// The route of a request: a JSON 404 for a path that is not a route, a 405 for a route called
/// with another method (`HEAD` is allowed wherever `GET` is).
pub fn find(method: &str, path: &str) -> Result<&'static Route, Rejection> {
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return Err(not_found());
    };
    let rest = if rest.len() > 1 { rest.trim_end_matches('/') } else { rest };
    let Some(r) = ROUTES.iter().find(|r| r.path == rest) else {
        return Err(not_found());
    };
    let m = method.to_ascii_uppercase();
    if m == r.method.as_str() || (m == "HEAD" && r.method == Method::Get) {
        Ok(r)
    } else {
        Err(Rejection::new(ErrorCode::MethodNotAllowed, "Method Not Allowed"))
    }
}

/// The JSON 404 of a path that is not a route.
pub fn not_found() -> Rejection {
    Rejection::new(ErrorCode::NotFound, "Not Found")
}

/// The reference's 400 for an over-long body (docs/protocol.md §2).
pub fn too_large(max: usize) -> Rejection {
    Rejection::new(ErrorCode::MessageTooLarge, "Message too large").with("max_size", max)
}

/// `POST register` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// A short name (completed with the server's domain) or a full id in the server's domain.
    pub agent_id: String,
    pub password: String,
}

/// `POST register` answer (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    /// `"registered"`.
    pub status: String,
    pub agent_id: String,
}

/// `POST message` answer (202): the message is stored (docs/design.md §3 "202 means durable").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// `"accepted"`.
    pub status: String,
    pub nonce: String,
    /// The server's clock when it accepted the message.
    pub timestamp: i64,
}

/// `GET whoami` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    pub agent_id: String,
}

/// `POST messages/ack` body: exactly one of the two fields (the relay reads it by hand, see
/// [`super::Relay`]'s `ack`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct AckRequest {
    /// Every message of the inbox up to and including this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_to_id: Option<i64>,
    /// These messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<i64>>,
}

/// `POST messages/ack` answer (200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledged {
    /// `"acknowledged"`.
    pub status: String,
    /// How many messages were removed.
    pub removed: u64,
}

/// `GET health` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `"healthy"`.
    pub status: String,
    pub domain: String,
    pub version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_found_by_method_and_path() {
        assert_eq!(find("POST", "/.well-known/atp/v1/message").unwrap().name, "message");
        assert_eq!(find("get", "/.well-known/atp/v1/whoami").unwrap().auth, Auth::Agent);
        assert_eq!(find("HEAD", "/.well-known/atp/v1/health").unwrap().name, "health");
        assert_eq!(find("GET", "/.well-known/atp/v1/messages/").unwrap().name, "messages");
        assert_eq!(find("GET", "/.well-known/atp/v1/messages/stream").unwrap().name, "messages/stream");
        assert_eq!(find("POST", "/.well-known/atp/v1/messages/ack").unwrap().auth, Auth::Agent);
        assert_eq!(find("GET", "/.well-known/atp/v1/messages/ack").unwrap_err().status(), 405);
        assert_eq!(find("GET", "/.well-known/atp/v1/message").unwrap_err().status(), 405);
        assert_eq!(find("GET", "/.well-known/atp/v1/nothing").unwrap_err().status(), 404);
        assert_eq!(find("GET", "/elsewhere").unwrap_err().status(), 404);
        assert_eq!(MESSAGE.url("https://a.test:7443/"), "https://a.test:7443/.well-known/atp/v1/message");
        assert_eq!(REGISTER.max_body, MAX_SMALL_BODY);
    }

    #[test]
    fn every_route_once() {
        for (i, a) in ROUTES.iter().enumerate() {
            assert!(a.path.starts_with('/'));
            assert!(ROUTES[i + 1..].iter().all(|b| b.path != a.path), "{} twice", a.path);
        }
    }
}
