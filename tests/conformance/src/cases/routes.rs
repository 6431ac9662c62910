//! Every route's success and error shapes (docs/protocol.md §6, §7): message (local submissions),
//! register, messages, agents, stats, inspect, capabilities, health, unknown paths and methods.
//! Every error must be JSON with `error` (and, for atp, its stable `error_code`).

use serde_json::{json, Value};

use crate::case;
use crate::http::Http;
use crate::kit::{nonce_of, Case, Ctx, Outcome};

pub fn cases() -> Vec<Case> {
    vec![
        case!("route.health", "§6", "200 healthy, our domain", health),
        case!("route.capabilities", "§6", "200 message, atp/1, 1048576", capabilities),
        case!("route.not_found", "§6", "404 JSON 550 5.1.0", not_found),
        case!("route.method_not_allowed", "§6", "405 JSON 500 5.5.2", method_not_allowed),
        case!("route.register.created", "§6", "201 registered name@domain", register_created),
        case!("route.register.conflict", "§6", "409 550 5.1.6", register_conflict),
        case!("route.register.reserved", "§1 §6", "403 550 5.7.0", register_reserved),
        case!("route.register.other_domain", "§1 §6", "403 550 5.7.0", register_other_domain),
        case!("route.register.bad_json", "§6", "400 500 5.5.2", register_bad_json),
        case!("route.register.missing_fields", "§6", "400 500 5.5.2", register_missing_fields),
        case!("route.register.invalid_id", "§1 §6", "400 500 5.5.2", register_invalid_id),
        case!("route.whoami", "§6.1", "200 {agent_id}; 401 535 5.7.8 without credential", whoami),
        case!("route.messages.inbox", "§6", "200 {messages, count}", messages_inbox),
        case!("route.messages.cursor", "§6", "after_id pages, last_id", messages_cursor),
        case!("route.messages.no_credential", "§6 §7", "401 535 5.7.8", messages_no_credential),
        case!("route.messages.wrong_password", "§7", "401 535 5.7.8", messages_wrong_password),
        case!("route.messages.bad_authorization", "§6", "401 535 5.7.8", messages_bad_authorization),
        case!("route.message.local_submission", "§6", "202, in the recipient's inbox", local_submission),
        case!("route.message.local_repeat", "design §3", "202 again, stored once", local_repeat),
        case!("route.message.local_replay", "§8.4", "400 550 5.7.30", local_replay),
        case!("route.message.no_credential", "§6", "401 535 5.7.8", submit_no_credential),
        case!("route.message.wrong_password", "§6 §7", "401 535 5.7.8", submit_wrong_password),
        case!("route.message.sender_mismatch", "§6", "403 553 5.7.1", submit_sender_mismatch),
        case!("route.message.stale_local", "§8.4", "400 550 5.7.31", submit_stale),
        case!("route.message.unknown_local_recipient", "design §3", "404 550 5.1.1", submit_orphan),
        case!("route.message.too_large", "§2", "400 552 5.3.4, max_size", submit_too_large),
        case!("route.agents.list", "§6", "200 lists the agents", agents_list),
        case!("route.agents.no_token", "§6", "401 535 5.7.8", agents_no_token),
        case!("route.agents.wrong_token", "§6", "403 550 5.7.0", agents_wrong_token),
        case!("route.stats", "§6", "200 messages/security/queue/domain", stats),
        case!("route.inspect.found", "§6", "200 nonce/from/to/status", inspect_found),
        case!("route.inspect.missing_nonce", "§6", "400 500 5.5.2", inspect_missing_nonce),
        case!("route.inspect.unknown", "§6", "404 550 5.1.0", inspect_unknown),
    ]
}

/// Cases that may leave a faulty server unusable: they run after all the others.
pub fn last_cases() -> Vec<Case> {
    vec![case!("route.register.conflict_then_store", "§6 §7", "409, then a submission 202", conflict_then_store)]
}

fn shape(ok: bool, got: String) -> Outcome {
    if ok {
        Outcome::pass(got)
    } else {
        Outcome::fail(got)
    }
}

async fn health(cx: &Ctx) -> Outcome {
    match Http::send(cx.http.get("health")).await {
        Ok(r) => {
            let ok = r.status == 200
                && r.get("status") == Some(&json!("healthy"))
                && r.get("domain") == Some(&json!(cx.domain()))
                && r.get("version").is_some_and(Value::is_string);
            shape(ok, format!("{} {}", r.status, r.text))
        }
        Err(e) => Outcome::fail(e.to_string()),
    }
}

async fn capabilities(cx: &Ctx) -> Outcome {
    match Http::send(cx.http.get("capabilities")).await {
        Ok(r) => {
            let has =
                |k: &str, v: &str| r.get(k).and_then(Value::as_array).is_some_and(|a| a.iter().any(|x| x == &json!(v)));
            let ok = r.status == 200
                && has("capabilities", "message")
                && has("protocols", "atp/1")
                && r.get("max_payload_size") == Some(&json!(atp_wasm::MAX_MESSAGE_SIZE));
            shape(ok, format!("{} {}", r.status, r.text))
        }
        Err(e) => Outcome::fail(e.to_string()),
    }
}

async fn not_found(cx: &Ctx) -> Outcome {
    cx.refusal(Http::send(cx.http.get("no-such-route")).await, 404, "550 5.1.0")
}

async fn method_not_allowed(cx: &Ctx) -> Outcome {
    cx.refusal(Http::send(cx.http.get("message")).await, 405, "500 5.5.2")
}

async fn register(cx: &Ctx, body: Value) -> Result<crate::http::Reply, crate::http::NoReply> {
    Http::send(cx.http.post("register").json(&body)).await
}

async fn register_created(cx: &Ctx) -> Outcome {
    let name = format!("conf-{}-c", cx.run_id);
    match register(cx, json!({"agent_id": name, "password": "pw-c"})).await {
        Ok(r) => {
            let id = format!("{name}@{}", cx.domain());
            let ok = r.status == 201 && r.json == Some(json!({"status": "registered", "agent_id": id}));
            shape(ok, format!("{} {}", r.status, r.text))
        }
        Err(e) => Outcome::fail(e.to_string()),
    }
}

/// Registers a fresh agent. The reference leaves a transaction open after a refused duplicate
/// registration (its agents.py:56-66 never rolls back the failed INSERT), which locks its database
/// for every later write until a registration succeeds; the conflict cases end with this, so that
/// one bug does not fail the rest of a run (`route.register.conflict_then_store` checks it).
async fn settle_registrations(cx: &Ctx) {
    let name = format!("conf-{}-s{}", cx.run_id, atp_wasm::message::new_nonce().get(4..12).unwrap_or("x"));
    let _ = register(cx, json!({"agent_id": name, "password": "pw"})).await;
}

async fn register_conflict(cx: &Ctx) -> Outcome {
    let o = cx.refusal(register(cx, json!({"agent_id": cx.a.id, "password": "whatever"})).await, 409, "550 5.1.6");
    settle_registrations(cx).await;
    o
}

/// After a refused duplicate registration the server still stores messages. (On the reference
/// the failed write then holds a lock of its own, and the server stores nothing ever again.)
async fn conflict_then_store(cx: &Ctx) -> Outcome {
    let o = cx.refusal(register(cx, json!({"agent_id": cx.b.id, "password": "whatever"})).await, 409, "550 5.1.6");
    let o = o
        .and(|| async {
            let m = cx.message(&cx.a.id, &cx.b.id);
            cx.accepted(cx.submit(&cx.a, m.to_string()).await, &nonce_of(&m))
        })
        .await;
    settle_registrations(cx).await;
    o
}

async fn register_reserved(cx: &Ctx) -> Outcome {
    cx.refusal(register(cx, json!({"agent_id": "postmaster", "password": "x"})).await, 403, "550 5.7.0")
}

async fn register_other_domain(cx: &Ctx) -> Outcome {
    let id = format!("conf-{}@elsewhere.{}", cx.run_id, cx.cfg.foreign.suffix);
    cx.refusal(register(cx, json!({"agent_id": id, "password": "x"})).await, 403, "550 5.7.0")
}

async fn register_bad_json(cx: &Ctx) -> Outcome {
    cx.refusal(Http::send(cx.http.post("register").body("{")).await, 400, "500 5.5.2")
}

async fn register_missing_fields(cx: &Ctx) -> Outcome {
    cx.refusal(register(cx, json!({"agent_id": "conf-nopassword"})).await, 400, "500 5.5.2")
}

async fn register_invalid_id(cx: &Ctx) -> Outcome {
    cx.refusal(register(cx, json!({"agent_id": "bad name!", "password": "x"})).await, 400, "500 5.5.2")
}

/// `GET whoami`: the authenticated agent's id (docs/protocol.md §6.1).
async fn whoami(cx: &Ctx) -> Outcome {
    let anonymous = cx.refusal(Http::send(cx.http.get("whoami")).await, 401, "535 5.7.8");
    if !anonymous.passed() {
        return anonymous;
    }
    match Http::send(cx.http.get("whoami").basic_auth(cx.a.id.to_uppercase(), Some(&cx.a.password))).await {
        Ok(r) => shape(
            r.status == 200 && r.get("agent_id") == Some(&json!(cx.a.id)),
            format!("{} {:?}", r.status, r.get("agent_id")),
        ),
        Err(e) => Outcome::fail(e.to_string()),
    }
}

async fn messages_inbox(cx: &Ctx) -> Outcome {
    match Http::send(cx.http.get("messages").basic_auth(&cx.a.id, Some(&cx.a.password))).await {
        Ok(r) => {
            let n = r.get("messages").and_then(Value::as_array).map(Vec::len);
            let ok = r.status == 200 && n.is_some() && r.get("count") == n.map(|n| json!(n)).as_ref();
            shape(ok, format!("{} count {:?}", r.status, r.get("count")))
        }
        Err(e) => Outcome::fail(e.to_string()),
    }
}

/// Two messages for A, then `limit=1` and `after_id` walk them one by one (docs/protocol.md §6).
async fn messages_cursor(cx: &Ctx) -> Outcome {
    let (m1, m2) = (cx.message(&cx.b.id, &cx.a.id), cx.message(&cx.b.id, &cx.a.id));
    for m in [&m1, &m2] {
        let o = cx.accepted(cx.submit(&cx.b, m.to_string()).await, &nonce_of(m));
        if !o.passed() {
            return o;
        }
    }
    let page = |q: String| async move {
        let r = Http::send(cx.http.get(&q).basic_auth(&cx.a.id, Some(&cx.a.password))).await.ok()?;
        let nonces: Vec<String> =
            r.get("messages")?.as_array()?.iter().map(|m| m["nonce"].as_str().unwrap_or_default().to_owned()).collect();
        Some((nonces, r.get("last_id").and_then(Value::as_i64)))
    };
    // find the cursor just before m1: walk the inbox one by one
    let mut after: Option<i64> = None;
    for _ in 0..1000 {
        let q = match after {
            Some(a) => format!("messages?limit=1&after_id={a}"),
            None => "messages?limit=1".into(),
        };
        let Some((nonces, last)) = page(q).await else { return Outcome::fail("inbox page failed") };
        if nonces.first().map(String::as_str) == Some(nonce_of(&m1).as_str()) {
            let Some((next, _)) = page(format!("messages?limit=1&after_id={}", last.unwrap_or(-1))).await else {
                return Outcome::fail("next page failed");
            };
            return shape(next == [nonce_of(&m2)], format!("page after m1: {next:?}"));
        }
        match last {
            Some(l) if !nonces.is_empty() => after = Some(l),
            _ => return Outcome::fail("m1 not found walking with limit=1"),
        }
    }
    Outcome::fail("inbox too long to walk")
}

async fn messages_no_credential(cx: &Ctx) -> Outcome {
    cx.refusal(Http::send(cx.http.get("messages")).await, 401, "535 5.7.8")
}

async fn messages_wrong_password(cx: &Ctx) -> Outcome {
    let r = Http::send(cx.http.get("messages").basic_auth(&cx.a.id, Some("wrong password"))).await;
    cx.refusal(r, 401, "535 5.7.8")
}

async fn messages_bad_authorization(cx: &Ctx) -> Outcome {
    let r = Http::send(cx.http.get("messages").header("authorization", "Basic !!!not-base64")).await;
    cx.refusal(r, 401, "535 5.7.8")
}

async fn local_submission(cx: &Ctx) -> Outcome {
    let m = cx.message(&cx.a.id, &cx.b.id);
    let n = nonce_of(&m);
    let o = cx.accepted(cx.submit(&cx.a, m.to_string()).await, &n);
    o.and(|| async {
        match cx.stored_once(&cx.b, &n).await {
            Ok(s) if s["from"] == json!(cx.a.id) && s["payload"] == m["payload"] => Outcome::pass("in B's inbox"),
            Ok(s) => Outcome::fail(format!("stored as {s}")),
            Err(e) => Outcome::fail(e),
        }
    })
    .await
}

/// The agent resends the same submission (its 202 was lost): 202 again, one copy (docs/design.md §3).
async fn local_repeat(cx: &Ctx) -> Outcome {
    let m = cx.message(&cx.a.id, &cx.b.id);
    let n = nonce_of(&m);
    let first = cx.accepted(cx.submit(&cx.a, m.to_string()).await, &n);
    first
        .and(|| async {
            let again = cx.accepted(cx.submit(&cx.a, m.to_string()).await, &n);
            again.and(|| async { cx.stored_once(&cx.b, &n).await.map(|_| "stored once".to_owned()).into() }).await
        })
        .await
}

async fn local_replay(cx: &Ctx) -> Outcome {
    let mut m = cx.message(&cx.a.id, &cx.b.id);
    let n = nonce_of(&m);
    let first = cx.accepted(cx.submit(&cx.a, m.to_string()).await, &n);
    first
        .and(|| async {
            m["payload"] = json!({"body": "other content, same nonce"});
            cx.refusal(cx.submit(&cx.a, m.to_string()).await, 400, "550 5.7.30")
        })
        .await
}

async fn submit_no_credential(cx: &Ctx) -> Outcome {
    let m = cx.message(&cx.a.id, &cx.b.id);
    cx.refusal(cx.transfer(m.to_string()).await, 401, "535 5.7.8")
}

async fn submit_wrong_password(cx: &Ctx) -> Outcome {
    let m = cx.message(&cx.a.id, &cx.b.id);
    let wrong = crate::kit::Agent { id: cx.a.id.clone(), password: "wrong password".into() };
    cx.refusal(cx.submit(&wrong, m.to_string()).await, 401, "535 5.7.8")
}

async fn submit_sender_mismatch(cx: &Ctx) -> Outcome {
    let m = cx.message(&cx.b.id, &cx.a.id);
    cx.refusal(cx.submit(&cx.a, m.to_string()).await, 403, "553 5.7.1")
}

async fn submit_stale(cx: &Ctx) -> Outcome {
    let mut m = cx.message(&cx.a.id, &cx.b.id);
    m["timestamp"] = json!(crate::kit::now() - 400);
    cx.refusal(cx.submit(&cx.a, m.to_string()).await, 400, "550 5.7.31")
}

/// A local agent writes to a local name nobody registered: refused, not kept for whoever
/// registers it later (docs/design.md §3 "No orphan mail").
async fn submit_orphan(cx: &Ctx) -> Outcome {
    let m = cx.message(&cx.a.id, &format!("ghost-{}@{}", cx.run_id, cx.domain()));
    cx.refusal(cx.submit(&cx.a, m.to_string()).await, 404, "550 5.1.1")
}

async fn submit_too_large(cx: &Ctx) -> Outcome {
    let mut m = cx.message(&cx.a.id, &cx.b.id);
    m["payload"] = json!({"body": "x".repeat(atp_wasm::MAX_MESSAGE_SIZE)});
    let r = cx.submit(&cx.a, m.to_string()).await;
    let max = r.as_ref().ok().and_then(|r| r.get("max_size").cloned());
    let o = cx.refusal(r, 400, "552 5.3.4");
    o.and(|| async {
        shape(max == Some(json!(atp_wasm::MAX_MESSAGE_SIZE)), format!("max_size {}", max.unwrap_or_default()))
    })
    .await
}

async fn agents_list(cx: &Ctx) -> Outcome {
    let token = match cx.admin() {
        Ok(t) => t,
        Err(o) => return o,
    };
    match Http::send(cx.http.get("agents").bearer_auth(token)).await {
        Ok(r) => {
            let list = r.get("agents").and_then(Value::as_array).cloned().unwrap_or_default();
            let ok = r.status == 200 && list.contains(&json!(cx.a.id)) && list.contains(&json!(cx.b.id));
            shape(ok, format!("{} {} agents", r.status, list.len()))
        }
        Err(e) => Outcome::fail(e.to_string()),
    }
}

async fn agents_no_token(cx: &Ctx) -> Outcome {
    if let Err(o) = cx.admin() {
        return o;
    }
    cx.refusal(Http::send(cx.http.get("agents")).await, 401, "535 5.7.8")
}

async fn agents_wrong_token(cx: &Ctx) -> Outcome {
    if let Err(o) = cx.admin() {
        return o;
    }
    cx.refusal(Http::send(cx.http.get("agents").bearer_auth("not-the-token")).await, 403, "550 5.7.0")
}

async fn stats(cx: &Ctx) -> Outcome {
    let token = match cx.admin() {
        Ok(t) => t,
        Err(o) => return o,
    };
    match Http::send(cx.http.get("stats").bearer_auth(token)).await {
        Ok(r) => {
            let obj = |k: &str| r.get(k).is_some_and(Value::is_object);
            let ok = r.status == 200
                && obj("messages")
                && obj("security")
                && obj("queue")
                && r.get("domain") == Some(&json!(cx.domain()))
                && r.get("uptime").is_some_and(Value::is_number)
                && r.get("security").and_then(|s| s.get("atk_pass")).is_some_and(Value::is_number);
            shape(ok, format!("{} keys {:?}", r.status, r.json.as_ref().and_then(Value::as_object).map(|o| o.len())))
        }
        Err(e) => Outcome::fail(e.to_string()),
    }
}

async fn inspect_found(cx: &Ctx) -> Outcome {
    let token = match cx.admin() {
        Ok(t) => t,
        Err(o) => return o,
    };
    let m = cx.message(&cx.a.id, &cx.b.id);
    let n = nonce_of(&m);
    let o = cx.accepted(cx.submit(&cx.a, m.to_string()).await, &n);
    o.and(|| async {
        match Http::send(cx.http.get(&format!("inspect?nonce={n}")).bearer_auth(token)).await {
            Ok(r) => {
                let ok = r.status == 200
                    && r.get("nonce") == Some(&json!(n))
                    && r.get("from") == Some(&json!(cx.a.id))
                    && r.get("to") == Some(&json!(cx.b.id))
                    && r.get("status") == Some(&json!("delivered"));
                shape(ok, format!("{} status {}", r.status, r.get("status").cloned().unwrap_or_default()))
            }
            Err(e) => Outcome::fail(e.to_string()),
        }
    })
    .await
}

async fn inspect_missing_nonce(cx: &Ctx) -> Outcome {
    let token = match cx.admin() {
        Ok(t) => t,
        Err(o) => return o,
    };
    cx.refusal(Http::send(cx.http.get("inspect").bearer_auth(token)).await, 400, "500 5.5.2")
}

async fn inspect_unknown(cx: &Ctx) -> Outcome {
    let token = match cx.admin() {
        Ok(t) => t,
        Err(o) => return o,
    };
    let r = Http::send(cx.http.get(&format!("inspect?nonce=conf-{}-none", cx.run_id)).bearer_auth(token)).await;
    cx.refusal(r, 404, "550 5.1.0")
}
