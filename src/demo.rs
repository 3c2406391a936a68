//! `chorus demo`: an embedded server and four scripted bots chatting in two
//! rooms (text, binary, renames, joins and leaves), with a transcript of what
//! each bot does and sees, and a short latency report at the end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use tokio::task::JoinHandle;

use crate::client::connection::{ConnectOptions, Received, Receiver, Sender, connect, split};
use crate::client::display::Display;
use crate::protocol::{ClientFrame, ServerEvent};
use crate::server::{ServerConfig, ServerHandle};
use crate::units::format_duration;

/// Messages in the closing burst used for the latency report.
const BURST: usize = 50;

/// What every bot shares: send times by client_id, and the counters.
#[derive(Debug)]
struct Shared {
    /// When each chat message was sent, by its client_id.
    sent_at: Mutex<HashMap<String, Instant>>,
    /// Delivery latency in microseconds.
    latency: Mutex<Histogram<u64>>,
    /// Sum of `ack.recipients`: deliveries the server promised.
    expected: AtomicU64,
    /// Chat and binary messages the bots received.
    received: AtomicU64,
    color: bool,
}

struct Bot {
    name: &'static str,
    sender: Sender,
    listener: JoinHandle<()>,
    next_id: u64,
}

impl Bot {
    async fn connect(name: &'static str, url: &str, shared: &Arc<Shared>) -> anyhow::Result<Bot> {
        let ws = connect(url, &ConnectOptions::default()).await?;
        let (sender, receiver) = split(ws);
        let listener = tokio::spawn(listen(name, receiver, shared.clone()));
        Ok(Bot { name, sender, listener, next_id: 1 })
    }

    async fn say(&mut self, text: &str, shared: &Shared, quiet: bool) -> anyhow::Result<()> {
        let client_id = format!("{}-{}", self.name, self.next_id);
        self.next_id += 1;
        if !quiet {
            action(shared, self.name, &format!("says {text:?}"));
        }
        crate::sync::lock(&shared.sent_at).insert(client_id.clone(), Instant::now());
        let frame = ClientFrame::Chat { text: text.into(), room: None, client_id: Some(client_id.into()) };
        self.sender.send_frame(&frame).await.context("sending")
    }

    async fn send(&mut self, frame: ClientFrame<'_>, shared: &Shared, what: &str) -> anyhow::Result<()> {
        action(shared, self.name, what);
        self.sender.send_frame(&frame).await.context("sending")
    }

    async fn quit(mut self, shared: &Shared) {
        action(shared, self.name, "quits");
        let _ = self.sender.close().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.listener).await;
    }
}

fn action(shared: &Shared, who: &str, what: &str) {
    let line = format!("{who:>6} ▶ {what}");
    if shared.color { println!("\x1b[1m{line}\x1b[0m") } else { println!("{line}") }
}

/// Print what one bot receives, and account for deliveries and latency.
async fn listen(name: &'static str, mut receiver: Receiver, shared: Arc<Shared>) {
    let mut display = Display::new(shared.color);
    while let Some(Ok(received)) = receiver.recv().await {
        if matches!(received, Received::Closed(_)) {
            break;
        }
        let Some(event) = received.event() else { continue };
        let mut quiet = false;
        match &event {
            ServerEvent::Chat { client_id, .. } => {
                shared.received.fetch_add(1, Ordering::Relaxed);
                if let Some(client_id) = client_id {
                    quiet = client_id.contains("-burst");
                    let sent = crate::sync::lock(&shared.sent_at).get(client_id.as_ref()).copied();
                    if let Some(sent) = sent {
                        let micros = sent.elapsed().as_micros() as u64;
                        let _ = crate::sync::lock(&shared.latency).record(micros.max(1));
                    }
                }
            }
            ServerEvent::Binary { .. } => {
                shared.received.fetch_add(1, Ordering::Relaxed);
            }
            ServerEvent::Ack { recipients, client_id, .. } => {
                shared.expected.fetch_add(*recipients as u64, Ordering::Relaxed);
                quiet = client_id.as_deref().is_some_and(|c| c.contains("-burst"));
                if !quiet {
                    println!("{name:>6}   ack: delivered to {recipients} other(s)");
                }
                continue;
            }
            _ => {}
        }
        if quiet {
            continue;
        }
        let data = match &received {
            Received::Event { data: Some(data), .. } => Some(data.as_ref()),
            _ => None,
        };
        if let Some(line) = display.line(&event, data) {
            println!("{name:>6}   sees {line}");
        }
    }
}

/// Run the demo; `pace` is the pause between scripted steps.
pub async fn run(pace: Duration) -> anyhow::Result<()> {
    let server = ServerHandle::start("127.0.0.1:0", ServerConfig::default()).await.context("starting the server")?;
    let url = server.url();
    let shared = Arc::new(Shared {
        sent_at: Mutex::new(HashMap::new()),
        latency: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).context("histogram")?),
        expected: AtomicU64::new(0),
        received: AtomicU64::new(0),
        color: Display::color_for_stdout(),
    });
    println!("chorus demo: embedded server on {url}; four bots, two rooms (#lobby, #rust)\n");
    let [alice, bob, carol] = converse(&url, &shared, pace).await?;
    burst(alice, bob, &shared, pace).await?;
    carol.quit(&shared).await;
    server.shutdown().await?;
    summary(&shared);
    Ok(())
}

/// The scripted conversation: renames, chat, rooms, binary, a taken name,
/// who, rooms, a bot leaving. The three bots that stay.
async fn converse(url: &str, shared: &Arc<Shared>, pace: Duration) -> anyhow::Result<[Bot; 3]> {
    let step = || tokio::time::sleep(pace);
    let mut alice = Bot::connect("alice", url, shared).await?;
    let mut bob = Bot::connect("bob", url, shared).await?;
    let mut carol = Bot::connect("carol", url, shared).await?;
    step().await;
    for bot in [&mut alice, &mut bob, &mut carol] {
        let name = bot.name;
        bot.send(ClientFrame::Username { name: name.into() }, shared, &format!("renames itself to {name}")).await?;
        step().await;
    }
    alice.say("hi everyone!", shared, false).await?;
    step().await;
    bob.say("hey alice, how is the server holding up?", shared, false).await?;
    step().await;
    carol.send(ClientFrame::Join { room: "rust".into() }, shared, "joins #rust").await?;
    step().await;
    let mut dave = Bot::connect("dave", url, shared).await?;
    step().await;
    dave.send(ClientFrame::Username { name: "dave".into() }, shared, "renames itself to dave").await?;
    step().await;
    dave.send(ClientFrame::Join { room: "rust".into() }, shared, "joins #rust").await?;
    step().await;
    carol.say("anyone here tried tokio-tungstenite?", shared, false).await?;
    step().await;
    action(shared, "dave", "sends 8 binary bytes");
    dave.sender.send_binary(vec![0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3]).await?;
    step().await;
    bob.send(ClientFrame::Username { name: "Alice".into() }, shared, "tries to take the name Alice").await?;
    step().await;
    alice.send(ClientFrame::Who, shared, "asks who is in #lobby").await?;
    step().await;
    bob.send(ClientFrame::Rooms, shared, "lists the rooms").await?;
    step().await;
    dave.quit(shared).await;
    step().await;
    Ok([alice, bob, carol])
}

/// Quick messages from alice and bob, to measure delivery latency; then they leave.
async fn burst(mut alice: Bot, mut bob: Bot, shared: &Arc<Shared>, pace: Duration) -> anyhow::Result<()> {
    println!("\n{BURST} quick messages from alice and bob to measure delivery latency…");
    for i in 0..BURST {
        let bot = if i % 2 == 0 { &mut alice } else { &mut bob };
        bot.next_id = 1000 + i as u64;
        let client_id = format!("{}-burst{i}", bot.name);
        crate::sync::lock(&shared.sent_at).insert(client_id.clone(), Instant::now());
        let frame =
            ClientFrame::Chat { text: format!("burst {i}").into(), room: None, client_id: Some(client_id.into()) };
        bot.sender.send_frame(&frame).await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(pace).await;
    println!();
    alice.quit(shared).await;
    bob.quit(shared).await;
    Ok(())
}

/// How many deliveries came, and how fast.
fn summary(shared: &Shared) {
    let latency = crate::sync::lock(&shared.latency).clone();
    let expected = shared.expected.load(Ordering::Relaxed);
    let received = shared.received.load(Ordering::Relaxed);
    println!("\ndelivery: {received} of {expected} expected messages received");
    if !latency.is_empty() {
        let at = |q: f64| format_duration(Duration::from_micros(latency.value_at_quantile(q)));
        println!(
            "chat delivery latency over {} deliveries: p50 {}  p90 {}  p99 {}  max {}",
            latency.len(),
            at(0.5),
            at(0.9),
            at(0.99),
            format_duration(Duration::from_micros(latency.max()))
        );
    }
    println!("\nnext: `chorus server` and two `chorus client` terminals, or `chorus run scenarios/smoke.toml`");
}
