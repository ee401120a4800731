//! A test CPIM adapter: an axum server recording every call, with a
//! switchable answer to `/subscribe` and a switch to fail `/notify`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const SUCCESS: u8 = 0;
pub const FAILURE: u8 = 1;
pub const INDETERMINATE: u8 = 2;
pub const HANG: u8 = 3;

#[derive(Default)]
pub struct Shared {
    pub calls: Mutex<Vec<(String, Value)>>,
    pub subscribe_mode: AtomicU8,
    pub fail_notify: AtomicBool,
}

#[derive(Clone)]
pub struct TestAdapter {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
}

impl TestAdapter {
    pub async fn start() -> TestAdapter {
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new()
            .route("/cpim/{op}", post(handle))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        TestAdapter { addr, shared }
    }

    pub fn url(&self) -> String {
        format!("http://{}/cpim", self.addr)
    }

    /// Calls to `op` so far.
    pub fn calls(&self, op: &str) -> Vec<Value> {
        self.shared
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(o, _)| o == op)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Waits until `n` calls to `op` arrived.
    pub async fn wait_calls(&self, op: &str, n: usize, wait: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let c = self.calls(op);
            if c.len() >= n || tokio::time::Instant::now() > deadline {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn handle(
    State(s): State<Arc<Shared>>,
    Path(op): Path<String>,
    Json(v): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if op == "notify" && s.fail_notify.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "down"})),
        );
    }
    s.calls.lock().unwrap().push((op.clone(), v.clone()));
    let trans = v.get("transID").cloned().unwrap_or(Value::Null);
    match op.as_str() {
        "subscribe" => match s.subscribe_mode.load(Ordering::SeqCst) {
            FAILURE => (
                StatusCode::OK,
                Json(json!({"status": "failure", "transID": trans})),
            ),
            INDETERMINATE => (
                StatusCode::OK,
                Json(json!({"status": "indeterminate", "transID": trans, "duration": 300})),
            ),
            HANG => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                (
                    StatusCode::OK,
                    Json(json!({"status": "success", "transID": trans})),
                )
            }
            _ => (
                StatusCode::OK,
                Json(json!({"status": "success", "transID": trans, "duration": 300})),
            ),
        },
        _ => (
            StatusCode::OK,
            Json(json!({"status": "success", "transID": trans})),
        ),
    }
}
