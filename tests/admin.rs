//! The operator's read-only views (issue 7 §5): `/admin/v1/presentities`,
//! `/admin/v1/presentities/{uri}`, `/admin/v1/subscriptions` and
//! `/admin/v1/dialogs/{id}` over a real server, bearer-protected, errors
//! as JSON.

mod support;

use serde_json::Value;
use sip_cpim_gateway::config::Config;
use sip_cpim_gateway::server::Server;
use sip_cpim_gateway::transport::Proto;
use support::{TempDir, Ua, pidf};

const TOKEN: &str = "ops-token";

async fn start(dir: &TempDir) -> Server {
    let mut cfg = Config::default();
    cfg.sip.listen = vec!["udp:127.0.0.1:0".into()];
    cfg.cpim.listen = "127.0.0.1:0".into();
    cfg.cpim.token = TOKEN.into();
    cfg.store.path = dir.0.join("store").display().to_string();
    cfg.presence.default_policy = "allow".into();
    cfg.presence.notify_min_interval_ms = 0;
    Server::start(&cfg).await.unwrap()
}

async fn get(s: &Server, path: &str, token: Option<&str>) -> (u16, Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut r = reqwest::Client::new().get(format!("http://{}{path}", s.http));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.unwrap();
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(Value::Null))
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn views_show_what_the_agent_holds() {
    let dir = TempDir::new("admin");
    let s = start(&dir).await;
    let ua = Ua::new(s.local_addr(Proto::Udp).unwrap()).await;
    let mut n = Vec::new();
    let doc = pidf(
        "pres:carol@example.com",
        "t-admin",
        "open",
        "in the lab",
        "2026-12-02T10:00:00Z",
    );
    let publish = format!(
        "PUBLISH sip:carol@example.com SIP/2.0\r\nVia: {{via}}\r\nMax-Forwards: 70\r\nFrom: <sip:carol@example.com>;tag=p\r\nTo: <sip:carol@example.com>\r\nCall-ID: adm-pub\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nExpires: 600\r\nContent-Type: application/pidf+xml\r\n\r\n{doc}"
    );
    let r = ua.request(&publish, &mut n).await;
    assert_eq!(r.status(), Some(200));
    let etag = r.sip_etag().unwrap().unwrap().to_string();
    let subscribe = "SUBSCRIBE sip:carol@example.com SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <sip:dave@example.com>;tag=dave1\r\nTo: <sip:carol@example.com>\r\nCall-ID: adm-sub\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:dave@{me}>\r\nRecord-Route: <sip:{me};lr>\r\nExpires: 600\r\nEvent: presence\r\n\r\n";
    let r = ua.request(subscribe, &mut n).await;
    assert_eq!(r.status(), Some(200));
    let to_tag = r.to().unwrap().tag().unwrap().to_owned();

    // Bearer token, as for the policies.
    let (code, body) = get(&s, "/admin/v1/presentities", None).await;
    assert_eq!(code, 401);
    assert_eq!(body["error"]["code"], "unauthorized");

    let (code, list) = get(&s, "/admin/v1/presentities", Some(TOKEN)).await;
    assert_eq!(code, 200);
    assert_eq!(
        list,
        serde_json::json!([{"entity": "pres:carol@example.com", "aor": "sip:carol@example.com",
            "registrations": 0, "publications": 1, "watchers": 1, "winfo_subscribers": 0}])
    );

    let (code, p) = get(
        &s,
        &format!("/admin/v1/presentities/{}", enc("pres:carol@example.com")),
        Some(TOKEN),
    )
    .await;
    assert_eq!(code, 200);
    // Each key once (the lists, not the summary's counts as well).
    let keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "aor",
            "document",
            "entity",
            "publications",
            "registrations",
            "subscriptions",
            "watchers",
            "winfo_subscribers"
        ]
    );
    let raw = reqwest::Client::new()
        .get(format!(
            "http://{}/admin/v1/presentities/{}",
            s.http,
            enc("pres:carol@example.com")
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for key in ["\"registrations\":", "\"publications\":"] {
        assert_eq!(raw.matches(key).count(), 1, "{key} once in {raw}");
    }
    assert!(p["document"].as_str().unwrap().contains("in the lab"));
    assert_eq!(p["publications"][0]["etag"], etag.as_str());
    assert_eq!(p["publications"][0]["publisher"], "sip:carol@example.com");
    assert!(p["publications"][0]["expires_in_s"].as_i64().unwrap() > 590);
    assert_eq!(p["subscriptions"][0]["watcher"], "sip:dave@example.com");
    assert_eq!(p["subscriptions"][0]["state"], "active");

    // Filters: watcher and target compare as AORs (pres: and sip: alike).
    let (code, subs) = get(
        &s,
        &format!(
            "/admin/v1/subscriptions?watcher={}&kind=local",
            enc("pres:dave@example.com")
        ),
        Some(TOKEN),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(subs["truncated"], false);
    let sub = &subs["subscriptions"][0];
    let id = format!("adm-sub;{to_tag};dave1");
    assert_eq!(sub["id"], id.as_str());
    assert_eq!(sub["kind"], "local");
    assert_eq!(sub["target"], "pres:carol@example.com");
    assert_eq!(sub["event"], "presence");
    assert_eq!(sub["via_adapter"], false);
    assert!(sub["last_notify_at_ms"].as_i64().is_some());
    let (_, none) = get(&s, "/admin/v1/subscriptions?kind=sip-to-cpim", Some(TOKEN)).await;
    assert_eq!(none["subscriptions"], serde_json::json!([]));
    let (_, other) = get(
        &s,
        "/admin/v1/subscriptions?target=sip:nobody@example.com",
        Some(TOKEN),
    )
    .await;
    assert_eq!(other["subscriptions"], serde_json::json!([]));
    let (code, bad) = get(&s, "/admin/v1/subscriptions?kind=sideways", Some(TOKEN)).await;
    assert_eq!(code, 400);
    assert_eq!(bad["error"]["code"], "invalid_query");

    // The dialog the next NOTIFY uses (RFC 3261 §12): route set, target, CSeq.
    let (code, d) = get(&s, &format!("/admin/v1/dialogs/{}", enc(&id)), Some(TOKEN)).await;
    assert_eq!(code, 200);
    assert_eq!(d["call_id"], "adm-sub");
    assert_eq!(d["local_tag"], to_tag.as_str());
    assert_eq!(d["remote_tag"], "dave1");
    // (The route points back at the test UA: no traffic leaves loopback.)
    assert_eq!(
        d["route_set"],
        serde_json::json!([format!("<sip:{};lr>", ua.addr)])
    );
    assert_eq!(d["remote_target"], format!("sip:dave@{}", ua.addr).as_str());
    assert_eq!(d["local_cseq"], 1, "one NOTIFY sent so far");
    assert_eq!(d["remote_cseq"], 1);
    let (code, e) = get(&s, "/admin/v1/dialogs/no%3Bsuch%3Bdialog", Some(TOKEN)).await;
    assert_eq!(code, 404);
    assert_eq!(e["error"]["code"], "unknown_dialog");
    let (code, _) = get(
        &s,
        &format!("/admin/v1/presentities/{}", enc("sip:x@elsewhere.org")),
        Some(TOKEN),
    )
    .await;
    assert_eq!(code, 404, "not a local presentity");

    // The views are in the API description.
    let (_, api) = get(&s, "/openapi.json", None).await;
    for path in [
        "/admin/v1/presentities",
        "/admin/v1/presentities/{presentity}",
        "/admin/v1/subscriptions",
        "/admin/v1/dialogs/{id}",
        "/readyz",
        "/metrics",
    ] {
        assert!(api["paths"][path].is_object(), "{path} in openapi.json");
    }
}

async fn send(
    s: &Server,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut r = reqwest::Client::new().request(method, format!("http://{}{path}", s.http));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.unwrap();
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(Value::Null))
}

/// The publisher grants (issue 14): bearer-protected, URIs percent-encoded
/// and normalised to AORs, PUT idempotent, DELETE of an absent grant 404,
/// bad URIs 400 with the JSON error body, described in `/openapi.json`.
#[tokio::test]
async fn publisher_grant_routes() {
    use reqwest::Method;
    let dir = TempDir::new("admin-pub");
    let s = start(&dir).await;
    let carol = enc("pres:carol@example.com");
    let list = format!("/admin/v1/publishers/{carol}");
    let dave = format!("{list}/{}", enc("sip:dave@example.com:5070;transport=tcp"));

    for (m, path) in [
        (Method::GET, &list),
        (Method::PUT, &dave),
        (Method::DELETE, &dave),
    ] {
        let (code, body) = send(&s, m.clone(), path, None).await;
        assert_eq!(code, 401, "{m} {path}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }

    let (code, body) = get(&s, &list, Some(TOKEN)).await;
    assert_eq!(code, 200);
    assert_eq!(
        body,
        serde_json::json!({"presentity": "sip:carol@example.com", "publishers": []})
    );

    // Granted, as an AOR (no port, no parameters); again: the same answer.
    for _ in 0..2 {
        let (code, body) = send(&s, Method::PUT, &dave, Some(TOKEN)).await;
        assert_eq!(code, 200);
        assert_eq!(
            body,
            serde_json::json!({"presentity": "sip:carol@example.com", "publisher": "sip:dave@example.com"})
        );
    }
    let (_, body) = get(&s, &list, Some(TOKEN)).await;
    assert_eq!(
        body["publishers"],
        serde_json::json!(["sip:dave@example.com"])
    );

    // Malformed URIs: 400 and the JSON error; a foreign presentity: 404.
    for path in [
        format!("/admin/v1/publishers/{carol}/{}", enc("not a uri")),
        format!(
            "/admin/v1/publishers/{carol}/{}",
            enc("http://dave.example.com/")
        ),
        format!(
            "/admin/v1/publishers/{}/{}",
            enc("carol@"),
            enc("sip:dave@example.com")
        ),
    ] {
        let (code, body) = send(&s, Method::PUT, &path, Some(TOKEN)).await;
        assert_eq!(code, 400, "{path}");
        assert_eq!(body["error"]["code"], "invalid_uri", "{path}");
        assert!(body["error"]["message"].is_string());
    }
    let (code, body) = send(
        &s,
        Method::PUT,
        &format!(
            "/admin/v1/publishers/{}/{}",
            enc("sip:x@elsewhere.org"),
            enc("sip:dave@example.com")
        ),
        Some(TOKEN),
    )
    .await;
    assert_eq!(code, 404);
    assert_eq!(body["error"]["code"], "not_local");
    let (_, body) = get(&s, &list, Some(TOKEN)).await;
    assert_eq!(
        body["publishers"],
        serde_json::json!(["sip:dave@example.com"]),
        "refused requests changed nothing"
    );

    // Revoked once; an absent grant is 404.
    let erin = format!("{list}/{}", enc("sip:erin@example.com"));
    let (code, body) = send(&s, Method::DELETE, &erin, Some(TOKEN)).await;
    assert_eq!(code, 404);
    assert_eq!(body["error"]["code"], "no_grant");
    let (code, _) = send(&s, Method::DELETE, &dave, Some(TOKEN)).await;
    assert_eq!(code, 204);
    let (code, body) = send(&s, Method::DELETE, &dave, Some(TOKEN)).await;
    assert_eq!(code, 404);
    assert_eq!(body["error"]["code"], "no_grant");
    let (_, body) = get(&s, &list, Some(TOKEN)).await;
    assert_eq!(body["publishers"], serde_json::json!([]));

    let (_, api) = get(&s, "/openapi.json", None).await;
    let grant = &api["paths"]["/admin/v1/publishers/{presentity}/{publisher}"];
    assert!(api["paths"]["/admin/v1/publishers/{presentity}"]["get"].is_object());
    assert!(grant["put"].is_object() && grant["delete"].is_object());
    assert!(api["components"]["schemas"]["PublisherList"].is_object());
}

/// Every refusal is the JSON error body, even those axum makes itself: a
/// path parameter that does not decode (400 `invalid_path`, was a
/// text/plain body) and a method the route does not serve (405
/// `method_not_allowed` with `Allow`, was an empty body), the 405 behind
/// the bearer check like the route itself.
#[tokio::test]
async fn extractor_and_method_refusals_are_json() {
    let dir = TempDir::new("admin-refusals");
    let s = start(&dir).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let base = format!("http://{}", s.http);

    for (method, path, param) in [
        (reqwest::Method::GET, "/admin/v1/policies/%FF", "presentity"),
        (reqwest::Method::GET, "/admin/v1/dialogs/%FF%FE", "id"),
        (
            reqwest::Method::PUT,
            "/admin/v1/publishers/pres:carol%40example.com/%C3",
            "publisher",
        ),
        (reqwest::Method::GET, "/cpim/v1/presence/%FF", "presentity"),
    ] {
        let r = http
            .request(method, format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{path}");
        assert_eq!(r.headers()["content-type"], "application/json", "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_path", "{path}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(param), "{path}: {message}");
    }

    for (method, path, token, allow) in [
        (
            reqwest::Method::PATCH,
            "/cpim/v1/presence/x",
            Some(TOKEN),
            "GET,HEAD",
        ),
        (
            reqwest::Method::DELETE,
            "/cpim/v1/subscribe",
            Some(TOKEN),
            "POST",
        ),
        (
            reqwest::Method::POST,
            "/admin/v1/dialogs/abc",
            Some(TOKEN),
            "GET,HEAD",
        ),
        (reqwest::Method::POST, "/healthz", None, "GET,HEAD"),
    ] {
        let mut r = http.request(method.clone(), format!("{base}{path}"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status().as_u16(), 405, "{method} {path}");
        assert_eq!(r.headers()["allow"], allow, "{method} {path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "method_not_allowed");
        assert_eq!(
            body["error"]["message"],
            format!("{method} is not allowed on this route")
        );
    }
    let (code, body) = send(&s, reqwest::Method::DELETE, "/cpim/v1/subscribe", None).await;
    assert_eq!(code, 401, "the bearer check comes before the method");
    assert_eq!(body["error"]["code"], "unauthorized");
}
