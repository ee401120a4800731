//! What one pending adapter delivery costs (issue 17), to size
//! `[cpim] adapter_max_pending`: heap bytes held by the in-memory queue
//! (a counting allocator), and store bytes (the record, and sled's size on
//! disk). Prints the numbers (`cargo test --release --test queue_footprint
//! -- --nocapture`); the asserts only catch an order-of-magnitude change.

mod support;

use sip_cpim_gateway::cpim::{NotifyRequest, Presence, TupleView};
use sip_cpim_gateway::delivery::Adapter;
use sip_cpim_gateway::store::{Batch, MemStore, SledStore, Store, Tree};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use support::{TempDir, pidf};

/// Bytes allocated and not yet freed, by everyone in the process.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const N: usize = 20_000;

/// A notify as the presence agent stages it for a CPIM watcher: the PIDF
/// document and its tuple view.
fn payload(i: usize) -> serde_json::Value {
    let n = NotifyRequest {
        watcher: format!("pres:watcher{i}@xmpp.example.org"),
        target: "pres:alice@example.com".into(),
        trans_id: Some(format!("{i:040x}")),
        presence: Presence {
            content_type: Some("application/pidf+xml".into()),
            body: Some(pidf(
                "pres:alice@example.com",
                "t1",
                "open",
                "in a meeting until 3",
                "2026-12-01T10:00:00Z",
            )),
            tuples: Some(vec![TupleView {
                id: "t1".into(),
                basic: Some("open".into()),
                contact: None,
                priority: None,
                note: Some("in a meeting until 3".into()),
                timestamp: Some("2026-12-01T10:00:00Z".into()),
            }]),
        },
        state: None,
        reason: None,
    };
    serde_json::to_value(n).unwrap()
}

fn adapter(store: Arc<dyn Store>) -> Adapter {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Adapter::detached(store, N * 2).unwrap()
}

/// Heap bytes per staged delivery: `streams` streams, `N` items in all.
/// Staged and not released, so no worker runs; the batches are dropped,
/// so only the queue holds memory.
fn memory_per_item(streams: usize) -> f64 {
    let a = adapter(Arc::new(MemStore::default()));
    let before = LIVE.load(Ordering::Relaxed);
    for i in 0..N {
        // Made and dropped here: only what the queue keeps adds up.
        let mut b = Batch::default();
        let w = format!("pres:watcher{}@xmpp.example.org", i % streams);
        a.stage(&mut b, &w, "pres:alice@example.com", "notify", payload(i));
    }
    let after = LIVE.load(Ordering::Relaxed);
    assert_eq!(a.depth(), N);
    (after - before) as f64 / N as f64
}

#[tokio::test]
async fn bytes_per_pending_delivery() {
    let one = memory_per_item(1);
    let many = memory_per_item(N);
    // The store: N records committed, then sled's size after a flush.
    let dir = TempDir::new("footprint");
    let store = Arc::new(SledStore::open(&dir.0.join("store")).unwrap());
    store.begin().unwrap();
    let empty = store.size_on_disk();
    let a = adapter(store.clone());
    let mut logical = 0usize;
    for chunk in (0..N).collect::<Vec<_>>().chunks(500) {
        let mut b = Batch::default();
        for &i in chunk {
            let w = format!("pres:watcher{i}@xmpp.example.org");
            a.stage(&mut b, &w, "pres:alice@example.com", "notify", payload(i));
        }
        for op in &b.ops {
            if let sip_cpim_gateway::store::Op::Put(_, k, v) = op {
                logical += k.len() + v.len();
            }
        }
        store.commit(b).await.unwrap();
    }
    store.flush().unwrap();
    assert_eq!(store.scan(Tree::Deliveries).unwrap().len(), N);
    let on_disk = store.size_on_disk() - empty;
    store.close().await.unwrap();
    let record = logical as f64 / N as f64;
    let disk = on_disk as f64 / N as f64;
    eprintln!(
        "pending delivery ({N} items, payload {} B of JSON): memory {one:.0} B/item in one stream, {many:.0} B/item one stream each; store record {record:.0} B/item, sled on disk {disk:.0} B/item",
        serde_json::to_vec(&payload(0)).unwrap().len()
    );
    for v in [one, many, record, disk] {
        assert!(v > 100.0 && v < 16_384.0, "{v}");
    }
}
