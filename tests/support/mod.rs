//! Test support: an in-process SIP stack on ephemeral loopback ports with a
//! counting application handler, and a small test UA over UDP/TCP/TLS.
#![allow(dead_code)]

pub mod adapter;
pub mod postgres;
pub mod process;
pub mod queue;

use bytes::Bytes;
use sip_cpim_gateway::sip::{Limits, Message, Method, StreamParser, parse_datagram};
use sip_cpim_gateway::transaction::{Timers, TransactionLayer, UasPolicy};
use sip_cpim_gateway::transport::Listener;
use sip_cpim_gateway::transport::{Proto, TlsSettings, TransportConfig, TransportLayer, Upstream};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

pub struct Opts {
    pub tls: bool,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    pub idle_timeout: Duration,
    pub message_timeout: Duration,
    /// How long the handler waits before answering 200.
    pub handler_delay: Duration,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            tls: false,
            max_connections: 64,
            max_connections_per_address: 64,
            idle_timeout: Duration::from_secs(30),
            message_timeout: Duration::from_secs(5),
            handler_delay: Duration::ZERO,
        }
    }
}

pub struct TestServer {
    pub transport: Arc<TransportLayer>,
    pub layer: TransactionLayer,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    pub tls: Option<SocketAddr>,
    /// Requests the application handler saw.
    pub calls: Arc<AtomicUsize>,
    pub cert_pem: Option<String>,
    _dir: Option<TempDir>,
}

/// A temporary directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "sipgw-{tag}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn policy() -> UasPolicy {
    UasPolicy {
        allow: vec![Method::Subscribe, Method::Notify, Method::Publish],
        allow_events: vec!["presence".into()],
        accept: vec!["application/pidf+xml".into()],
        supported: vec![],
        agent: "gw.test".into(),
        ..UasPolicy::default()
    }
}

pub async fn start(opts: Opts) -> TestServer {
    let l = |t, a: &str| Listener {
        transport: t,
        addr: a.parse().unwrap(),
    };
    let mut listeners = vec![l(Proto::Udp, "127.0.0.1:0"), l(Proto::Tcp, "127.0.0.1:0")];
    let (mut tls, mut dir, mut cert_pem) = (None, None, None);
    if opts.tls {
        let d = TempDir::new("tls");
        let ck = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .unwrap();
        let (cert, key) = (d.0.join("cert.pem"), d.0.join("key.pem"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        cert_pem = Some(ck.cert.pem());
        tls = Some(TlsSettings {
            cert,
            key,
            ca: None,
        });
        dir = Some(d);
        listeners.push(l(Proto::Tls, "127.0.0.1:0"));
    }
    let config = TransportConfig {
        listeners,
        limits: Limits::default(),
        idle_timeout: opts.idle_timeout,
        message_timeout: opts.message_timeout,
        max_connections: opts.max_connections,
        max_connections_per_address: opts.max_connections_per_address,
        connect_timeout: Duration::from_secs(2),
        udp_mtu_threshold: 1300,
        tls,
        advertise: None,
        udp_recv_buffer: 1 << 20,
    };
    let upstream = Upstream::new();
    let transport = TransportLayer::bind(config, upstream.clone())
        .await
        .unwrap();
    let layer = TransactionLayer::new(transport.clone(), Timers::default(), policy(), 1300);
    let mut app = queue::connect(&layer);
    upstream.connect(Arc::new(layer.clone()));
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let delay = opts.handler_delay;
    tokio::spawn(async move {
        while let Some(st) = app.recv().await {
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let resp = st.reply(200, "OK");
                let _ = st.respond(resp).await;
            });
        }
    });
    TestServer {
        udp: transport.local_addr(Proto::Udp).unwrap(),
        tcp: transport.local_addr(Proto::Tcp).unwrap(),
        tls: transport.local_addr(Proto::Tls),
        transport,
        layer,
        calls,
        cert_pem,
        _dir: dir,
    }
}

/// A request as a UA would send it; `sent_by` is the UA's own address.
pub fn request(
    method: &str,
    proto: &str,
    sent_by: SocketAddr,
    branch: &str,
    extra: &str,
) -> String {
    format!(
        "{method} sip:presentity@example.com SIP/2.0\r\n\
         Via: SIP/2.0/{proto} {sent_by};branch=z9hG4bK{branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:watcher@example.com>;tag=w1\r\n\
         To: <sip:presentity@example.com>\r\n\
         Call-ID: {branch}@test\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:watcher@{sent_by}>\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    )
}

pub async fn udp_ua() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

/// The next datagram as a message, or `None` after `wait`.
pub async fn recv_udp(sock: &UdpSocket, wait: Duration) -> Option<(Message, Bytes)> {
    let mut buf = vec![0u8; 65536];
    match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => {
            let b = Bytes::copy_from_slice(&buf[..n]);
            Some((
                parse_datagram(b.clone(), &Limits::default()).expect("server sent a valid message"),
                b,
            ))
        }
        _ => None,
    }
}

/// The next datagram as text, or `None` after `wait` (for answers that
/// echo malformed headers back, RFC 3261 §8.2.6.2).
pub async fn recv_udp_raw(sock: &UdpSocket, wait: Duration) -> Option<String> {
    let mut buf = vec![0u8; 65536];
    match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        _ => None,
    }
}

/// The next message on a stream, or `None` on close/timeout.
pub async fn recv_stream<S: AsyncRead + Unpin>(
    s: &mut S,
    parser: &mut StreamParser,
    wait: Duration,
) -> Option<Message> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = vec![0u8; 8192];
    loop {
        if let Some(m) = parser.next_message().expect("valid stream") {
            return Some(m);
        }
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(n)) => parser.push(&buf[..n]),
        }
    }
}

pub async fn send_stream<S: AsyncWrite + Unpin>(s: &mut S, data: &str) {
    s.write_all(data.as_bytes()).await.unwrap();
}

pub async fn tcp_connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

/// A TLS client that trusts `cert_pem`.
pub async fn tls_connect(
    addr: SocketAddr,
    cert_pem: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = TcpStream::connect(addr).await.unwrap();
    conn.connect(
        rustls_pki_types::ServerName::try_from("localhost").unwrap(),
        tcp,
    )
    .await
    .unwrap()
}

/// A UDP user agent for presence tests: sends requests, answers NOTIFYs.
pub struct Ua {
    pub sock: UdpSocket,
    pub addr: SocketAddr,
    pub server: SocketAddr,
    pub n: std::sync::atomic::AtomicU32,
}

impl Ua {
    pub async fn new(server: SocketAddr) -> Ua {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        Ua {
            sock,
            addr,
            server,
            n: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// A fresh branch.
    pub fn branch(&self) -> String {
        format!(
            "z9hG4bK{}x{}",
            self.addr.port(),
            self.n.fetch_add(1, Ordering::SeqCst)
        )
    }

    /// Sends `text` with `{via}` replaced by this UA's Via value.
    pub async fn send(&self, text: &str) {
        let via = format!("SIP/2.0/UDP {};branch={}", self.addr, self.branch());
        let text = text
            .replace("{via}", &via)
            .replace("{me}", &self.addr.to_string());
        let text = fix_length(&text);
        self.sock
            .send_to(text.as_bytes(), self.server)
            .await
            .unwrap();
    }

    /// The next message (request or response) within `wait`.
    pub async fn recv(&self, wait: Duration) -> Option<Message> {
        recv_udp(&self.sock, wait).await.map(|(m, _)| m)
    }

    /// Sends a request and returns its final response; NOTIFYs arriving
    /// meanwhile are answered 200 and kept in `notifies`.
    pub async fn request(&self, text: &str, notifies: &mut Vec<Message>) -> Message {
        self.send(text).await;
        loop {
            let m = self.recv(Duration::from_secs(5)).await.expect("a response");
            if m.is_request() {
                self.answer(&m, 200).await;
                notifies.push(m);
            } else if m.status().unwrap_or(0) >= 200 {
                return m;
            }
        }
    }

    /// The NOTIFY a request of ours triggered: the one [`Ua::request`]
    /// already answered and kept in `collected`, else the next to arrive
    /// (answered 200).
    pub async fn triggered_notify(&self, collected: &mut Vec<Message>) -> Message {
        match collected.pop() {
            Some(m) => m,
            None => self
                .notify(Duration::from_secs(5), 200)
                .await
                .expect("the NOTIFY the request triggers"),
        }
    }

    /// The next NOTIFY within `wait`, answered with `code`.
    pub async fn notify(&self, wait: Duration, code: u16) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = self.recv(left).await?;
            if m.method() == Some(&Method::Notify) {
                self.answer(&m, code).await;
                return Some(m);
            }
        }
    }

    /// Answers `req` where RFC 3261 §18.2.2 says: its top Via's sent-by
    /// (in a cluster a NOTIFY may come from another node than the one this
    /// UA sends to), else the server.
    pub async fn answer(&self, req: &Message, code: u16) {
        let resp = Message::response_to(req, code, "");
        let to = req
            .top_via()
            .and_then(|v| {
                format!(
                    "{}:{}",
                    v.host,
                    sip_cpim_gateway::sip::headers::sent_by_port(v)
                )
                .parse::<SocketAddr>()
                .ok()
            })
            .unwrap_or(self.server);
        self.sock.send_to(&resp.to_bytes(), to).await.unwrap();
    }
}

/// Sets Content-Length to the body's length.
pub fn fix_length(text: &str) -> String {
    match text.split_once("\r\n\r\n") {
        Some((head, body)) => {
            let head: Vec<&str> = head
                .split("\r\n")
                .filter(|l| !l.to_ascii_lowercase().starts_with("content-length:"))
                .collect();
            format!(
                "{}\r\nContent-Length: {}\r\n\r\n{}",
                head.join("\r\n"),
                body.len(),
                body
            )
        }
        None => text.to_owned(),
    }
}

/// A PIDF document with one tuple.
pub fn pidf(entity: &str, id: &str, basic: &str, note: &str, ts: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{entity}\">\r\n<tuple id=\"{id}\"><status><basic>{basic}</basic></status><note>{note}</note><timestamp>{ts}</timestamp></tuple>\r\n</presence>\r\n"
    )
}

/// A store that fails its commits while `fail` is set (fault injection for
/// "acknowledged means durable"); reads and successful commits go to `inner`.
pub struct FailingStore {
    pub inner: std::sync::Arc<dyn sip_cpim_gateway::store::Store>,
    pub fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Commits refused so far.
    pub refused: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Set with `fail`: reads of the subscriptions fail too (sled after a
    /// failed write refuses reads; here the last tree a reload reads).
    pub reads_fail: bool,
}

impl FailingStore {
    fn read_fault(
        &self,
        tree: sip_cpim_gateway::store::Tree,
    ) -> Result<(), sip_cpim_gateway::store::StoreError> {
        if self.reads_fail
            && tree == sip_cpim_gateway::store::Tree::Subscriptions
            && self.fail.load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(sip_cpim_gateway::store::StoreError::Io(
                "injected read failure".into(),
            ));
        }
        Ok(())
    }
}

impl sip_cpim_gateway::store::Store for FailingStore {
    fn get(
        &self,
        tree: sip_cpim_gateway::store::Tree,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, sip_cpim_gateway::store::StoreError> {
        self.read_fault(tree)?;
        self.inner.get(tree, key)
    }

    fn visit(
        &self,
        tree: sip_cpim_gateway::store::Tree,
        f: sip_cpim_gateway::store::Visitor<'_>,
    ) -> Result<(), sip_cpim_gateway::store::StoreError> {
        self.read_fault(tree)?;
        self.inner.visit(tree, f)
    }

    fn commit(
        &self,
        batch: sip_cpim_gateway::store::Batch,
    ) -> sip_cpim_gateway::store::CommitFuture {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            self.refused
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async {
                Err(sip_cpim_gateway::store::StoreError::Io(
                    "injected commit failure".into(),
                ))
            })
        } else {
            self.inner.commit(batch)
        }
    }

    fn flush(&self) -> Result<(), sip_cpim_gateway::store::StoreError> {
        self.inner.flush()
    }
}

/// Prometheus text exposition → `name{labels}` → value.
pub fn parse_exposition(text: &str) -> std::collections::HashMap<String, f64> {
    let mut m = std::collections::HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("series and value");
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        // Label order as printed; the tests name them in that order.
        m.insert(series.to_owned(), v);
    }
    m
}

/// One series of a parsed exposition; 0 when absent.
pub fn series(m: &std::collections::HashMap<String, f64>, name: &str) -> f64 {
    m.get(name).copied().unwrap_or(0.0)
}

/// POSTs `body` as JSON to `url`; the answer's JSON body.
pub async fn post_json(
    http: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> serde_json::Value {
    let r = http.post(url).json(body).send().await.unwrap();
    r.json().await.unwrap()
}
