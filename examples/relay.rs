//! A minimal broadcast relay on plain tokio-tungstenite: every text or binary
//! frame goes, verbatim, to every other connection. No rooms, no envelope, no
//! acks. It is the baseline for what the WebSocket transport alone costs
//! (bench/), and a target for the harness's `protocol = "raw"`.
//!
//! `cargo run --release --example relay -- 127.0.0.1:9001`

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Messages queued per connection before it is dropped as too slow.
const QUEUE: usize = 4096;

type Peers = Arc<Mutex<HashMap<u64, mpsc::Sender<Message>>>>;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9001".to_string());
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("relay listening on ws://{}/", listener.local_addr()?);
    let peers: Peers = Arc::default();
    let next = AtomicU64::new(1);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let id = next.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(serve(tcp, id, peers.clone()));
    }
}

async fn serve(tcp: tokio::net::TcpStream, id: u64, peers: Peers) {
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(16 * 1024);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await else { return };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(QUEUE);
    peers.lock().unwrap_or_else(|e| e.into_inner()).insert(id, tx);
    let writer = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            if sink.feed(message).await.is_err() {
                return;
            }
            while let Ok(message) = rx.try_recv() {
                if sink.feed(message).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(message)) = stream.next().await {
        if !(message.is_text() || message.is_binary()) {
            continue;
        }
        let peers = peers.lock().unwrap_or_else(|e| e.into_inner());
        for (other, tx) in peers.iter() {
            if *other != id {
                // A full queue drops the message for that peer only.
                let _ = tx.try_send(message.clone());
            }
        }
    }
    peers.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    writer.abort();
}
