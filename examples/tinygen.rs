//! A tiny independent load generator, to check that the chorus harness is not
//! the bottleneck of a benchmark (bench/generator.sh). `clients` plain
//! tokio-tungstenite connections to a broadcast relay; each sends fixed-size
//! text frames at a fixed rate (a timer, no stamps, no histograms) and counts
//! the frames it receives. It prints one JSON line: what was sent and received
//! and the CPU time it took, so its cost per message can be set beside the
//! harness's under the same load.
//!
//! `cargo run --release --example tinygen -- ws://127.0.0.1:9001/ 10 100 8 [64]`
//! (url, clients, messages per second per client, seconds, text bytes). A
//! `{i}` in the url is replaced by the client's index (0, 1, ...), so
//! `ws://127.0.0.1:8080/?room=r{i}` puts every client in a room of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::Barrier;
use tokio::time::{MissedTickBehavior, interval_at, sleep};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Counters every client adds to.
#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    received: AtomicU64,
    /// Worst lateness of a send against its timer tick, in microseconds.
    behind_max_us: AtomicU64,
}

struct Load {
    url: String,
    clients: u64,
    rate: f64,
    seconds: f64,
    size: usize,
}

fn parse_args() -> anyhow::Result<Load> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: tinygen URL CLIENTS RATE SECONDS [TEXT_BYTES]";
    let arg = |i: usize| args.get(i).ok_or_else(|| anyhow::anyhow!("{usage}"));
    let load = Load {
        url: arg(0)?.clone(),
        clients: arg(1)?.parse()?,
        rate: arg(2)?.parse()?,
        seconds: arg(3)?.parse()?,
        size: args.get(4).map_or(Ok(64), |s| s.parse())?,
    };
    anyhow::ensure!(load.clients >= 1 && load.rate > 0.0 && load.seconds > 0.0, "{usage}: all must be positive");
    Ok(load)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let load = Arc::new(parse_args()?);
    let totals = Arc::new(Totals::default());
    let ready = Arc::new(Barrier::new(load.clients as usize));
    let cpu_before = cpu_seconds();
    let mut tasks = Vec::new();
    for index in 0..load.clients {
        let (load, totals, ready) = (load.clone(), totals.clone(), ready.clone());
        tasks.push(tokio::spawn(async move { client(index, &load, &totals, &ready).await }));
    }
    let mut failed = 0;
    for task in tasks {
        if !matches!(task.await, Ok(Ok(()))) {
            failed += 1;
        }
    }
    let sent = totals.sent.load(Ordering::Relaxed);
    let received = totals.received.load(Ordering::Relaxed);
    println!(
        "{{\"clients\":{},\"failed\":{failed},\"rate\":{},\"seconds\":{},\"sent\":{sent},\"received\":{received},\
         \"expected\":{},\"cpu_secs\":{:.4},\"behind_max_ms\":{:.3}}}",
        load.clients,
        load.rate,
        load.seconds,
        sent * (load.clients - 1),
        cpu_seconds() - cpu_before,
        totals.behind_max_us.load(Ordering::Relaxed) as f64 / 1000.0,
    );
    Ok(())
}

/// One connection: wait for every other to be up, send on a timer while
/// counting what arrives, then drain for a second and close.
async fn client(index: u64, load: &Load, totals: &Totals, ready: &Barrier) -> anyhow::Result<()> {
    let url = load.url.replace("{i}", &index.to_string());
    // tungstenite zeroes `read_buffer_size` bytes before every read (128 KiB
    // by default, a tenth of this generator's CPU at 10,000 messages a
    // second); 4 KiB holds a hundred of these frames.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let connected = tokio_tungstenite::connect_async_with_config(&url, Some(config), true).await;
    ready.wait().await;
    let (mut sink, mut stream) = connected?.0.split();
    let text: String = "x".repeat(load.size);
    let period = Duration::from_secs_f64(1.0 / load.rate);
    // Clients start spread over one period, so they do not send in lock-step.
    let first = tokio::time::Instant::now() + period.mul_f64(index as f64 / load.clients as f64);
    let mut ticks = interval_at(first, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let end = Instant::now() + Duration::from_secs_f64(load.seconds);
    let drain = sleep(Duration::from_secs_f64(load.seconds + 1.0));
    tokio::pin!(drain);
    loop {
        tokio::select! {
            () = &mut drain => break,
            tick = ticks.tick(), if Instant::now() < end => {
                let behind = tick.elapsed().as_micros() as u64;
                totals.behind_max_us.fetch_max(behind, Ordering::Relaxed);
                sink.send(Message::text(text.as_str())).await?;
                totals.sent.fetch_add(1, Ordering::Relaxed);
            }
            message = stream.next() => match message {
                Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                    totals.received.fetch_add(1, Ordering::Relaxed);
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(err.into()),
                None => break,
            },
        }
    }
    let _ = sink.close().await;
    Ok(())
}

/// User plus system CPU time of this process so far.
fn cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        let secs = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        secs(u.user_time()) + secs(u.system_time())
    })
}
