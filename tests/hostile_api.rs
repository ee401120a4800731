//! Regression tests for what schemathesis found in the HTTP API (issue 17
//! item 5, tests/hostile/schemathesis.sh, docs/reliability.md "Hostile
//! input"): the served `/openapi.json` documents every answer the server
//! gives and constrains what it refuses; the server takes what the
//! document admits and refuses what it does not.

mod support;

use serde_json::{Value, json};
use sip_cpim_gateway::config::Config;
use sip_cpim_gateway::server::Server;
use support::TempDir;

const TOKEN: &str = "hostile-token";

async fn start(dir: &TempDir) -> Server {
    let mut cfg = Config::default();
    cfg.sip.listen = vec!["udp:127.0.0.1:0".into()];
    cfg.cpim.listen = "127.0.0.1:0".into();
    cfg.cpim.token = TOKEN.into();
    // Nothing listens there; no test here reaches the adapter.
    cfg.cpim.adapter_url = "http://127.0.0.1:9/cpim".into();
    cfg.store.path = dir.0.join("store").display().to_string();
    Server::start(&cfg).await.unwrap()
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn post_json(s: &Server, path: &str, body: &str) -> (u16, Value) {
    let r = client()
        .post(format!("http://{}{path}", s.http))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn openapi_documents_every_answer() {
    let dir = TempDir::new("hostile-openapi");
    let s = start(&dir).await;
    let api: Value = client()
        .get(format!("http://{}/openapi.json", s.http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let statuses = |path: &str, method: &str| -> Vec<String> {
        let r = api["paths"][path][method]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} has responses"));
        r.keys().cloned().collect()
    };
    for path in [
        "/cpim/v1/subscribe",
        "/cpim/v1/unsubscribe",
        "/cpim/v1/notify",
    ] {
        let got = statuses(path, "post");
        for code in ["200", "400", "401", "408", "413", "415", "503"] {
            assert!(
                got.contains(&code.to_owned()),
                "POST {path}: {code} in {got:?}"
            );
        }
    }
    let got = statuses("/cpim/v1/presence/{presentity}", "get");
    for code in ["200", "400", "401", "404", "503"] {
        assert!(
            got.contains(&code.to_owned()),
            "presence: {code} in {got:?}"
        );
    }
    for (path, method, codes) in [
        (
            "/admin/v1/policies/{presentity}/{watcher}",
            "put",
            &["200", "400", "401", "404", "408", "413", "415", "503"][..],
        ),
        (
            "/admin/v1/policies/{presentity}/{watcher}",
            "delete",
            &["204", "400", "401", "404", "503"][..],
        ),
        (
            "/admin/v1/dialogs/{id}",
            "get",
            &["200", "400", "401", "404"][..],
        ),
    ] {
        let got = statuses(path, method);
        for code in codes {
            assert!(
                got.contains(&(*code).to_owned()),
                "{method} {path}: {code} in {got:?}"
            );
        }
    }
    // The subscription filter is a query string (utoipa's default would
    // have made it path parameters, which no client sends).
    let params = api["paths"]["/admin/v1/subscriptions"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let names: Vec<_> = params.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["kind", "watcher", "target", "limit"]);
    assert!(params.iter().all(|p| p["in"] == "query"), "{params:?}");
    // `limit` documents the largest value the server reads.
    assert_eq!(params[3]["schema"]["maximum"], json!(u64::MAX));
    // URIs and tokens carry the patterns of what the server takes.
    let schemas = &api["components"]["schemas"];
    let uri = schemas["SubscribeRequest"]["properties"]["watcher"]["pattern"]
        .as_str()
        .unwrap();
    assert!(uri.starts_with("^(sip|sips|pres|im):"), "{uri}");
    let presentity = api["paths"]["/admin/v1/policies/{presentity}"]["get"]["parameters"][0]
        ["schema"]["pattern"]
        .as_str();
    assert_eq!(presentity, Some(uri));
    assert!(
        schemas["SubscribeRequest"]["properties"]["transID"]["pattern"].is_string(),
        "transID is a SIP token"
    );
    let duration = &schemas["SubscribeRequest"]["properties"]["duration"];
    assert_eq!(duration["maximum"], json!(u32::MAX));
    // A notify that is not terminating needs a document and no reason.
    let notify = &schemas["NotifyRequest"];
    assert_eq!(notify["if"]["properties"]["state"]["const"], "terminated");
    assert_eq!(notify["else"]["not"]["required"], json!(["reason"]));
    s.shutdown(std::time::Duration::from_secs(2)).await;
}

#[tokio::test]
async fn arrays_are_not_objects() {
    let dir = TempDir::new("hostile-arrays");
    let s = start(&dir).await;
    // serde's derived structs take an array of their fields in order; the
    // document says object, and so does the server now.
    let cases = [
        (
            "/cpim/v1/subscribe",
            r#"["pres:w@example.org", "pres:alice@example.com"]"#,
        ),
        (
            "/cpim/v1/notify",
            r#"{"watcher": "sip:0@A", "target": "sip:0@A", "state": "terminated", "presence": [null, null]}"#,
        ),
        (
            "/cpim/v1/notify",
            r#"{"watcher": "sip:0@A", "target": "sip:0@A", "presence": {"tuples": [["t1", "open"]]}}"#,
        ),
    ];
    for (path, body) in cases {
        let (code, answer) = post_json(&s, path, body).await;
        assert_eq!(code, 400, "{path} {body}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_json", "{body}");
    }
    // The object forms of the same are taken.
    let (code, answer) = post_json(
        &s,
        "/cpim/v1/notify",
        r#"{"watcher": "sip:0@A", "target": "sip:0@A", "state": "terminated", "presence": {}}"#,
    )
    .await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["code"], 481, "no such dialog: {answer}");
    s.shutdown(std::time::Duration::from_secs(2)).await;
}

#[tokio::test]
async fn limit_takes_every_documented_value() {
    let dir = TempDir::new("hostile-limit");
    let s = start(&dir).await;
    let get = |q: &'static str| {
        let url = format!("http://{}/admin/v1/subscriptions?{q}", s.http);
        async move {
            let r = client().get(url).bearer_auth(TOKEN).send().await.unwrap();
            r.status().as_u16()
        }
    };
    // Up to u64::MAX (clamped to 10,000 served), as documented; one more,
    // or a negative number, is outside the document and refused.
    assert_eq!(get("limit=18446744073709551615").await, 200);
    assert_eq!(get("limit=0").await, 200);
    assert_eq!(get("limit=18446744073709551616").await, 400);
    assert_eq!(get("limit=-1").await, 400);
    s.shutdown(std::time::Duration::from_secs(2)).await;
}

#[tokio::test]
async fn duration_is_any_integral_json_number() {
    let dir = TempDir::new("hostile-duration");
    let s = start(&dir).await;
    let sub = |d: &str| {
        format!(
            r#"{{"watcher": "pres:w@example.org", "target": "pres:alice@example.com", "duration": {d}}}"#
        )
    };
    // JSON Schema's integer admits 3600.0 (2020-12 validation §6.1.1).
    for d in ["3600", "3600.0", "4294967295"] {
        let (code, answer) = post_json(&s, "/cpim/v1/subscribe", &sub(d)).await;
        assert_eq!(code, 200, "duration {d}: {answer}");
        assert_ne!(answer["status"], "failure", "duration {d}: {answer}");
    }
    for d in ["3600.5", "-1", "4294967296", "\"3600\""] {
        let (code, answer) = post_json(&s, "/cpim/v1/subscribe", &sub(d)).await;
        assert_eq!(code, 400, "duration {d}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_json", "duration {d}");
    }
    s.shutdown(std::time::Duration::from_secs(2)).await;
}
