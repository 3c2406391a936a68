//! Several nodes sharing rooms through a real Redis: cross-node delivery in
//! one seq order, presence and names on every node, history from any node, a
//! node killed, Redis restarted, a subscriber that missed messages.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::redis::Redis;
use common::{Client, server_with};
use serde_json::json;

use chorus::server::cluster::ClusterConfig;
use chorus::server::history::store::Retention;
use chorus::server::{ServerConfig, ServerHandle, SessionConfig};

fn node_config(redis: &Redis) -> ServerConfig {
    ServerConfig {
        redis: Some(ClusterConfig {
            url: redis.url(),
            node_ttl: Duration::from_millis(1500),
            retention: Retention::default(),
        }),
        session: SessionConfig { rate_limit: None, ..common::quick_close().session },
        ..common::quick_close()
    }
}

async fn nodes(redis: &Redis, n: usize) -> Vec<ServerHandle> {
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(server_with(node_config(redis)).await);
    }
    nodes
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn messages_cross_nodes_in_one_seq_order() {
    let redis = Redis::start(false);
    let nodes = nodes(&redis, 3).await;
    let mut alice = Client::named(&nodes[0].url(), "alice").await;
    let mut bob = Client::named(&nodes[1].url(), "bob").await;
    let mut carol = Client::named(&nodes[2].url(), "carol").await;
    for c in [&mut alice, &mut bob, &mut carol] {
        c.settle(Duration::from_millis(300)).await;
    }
    for i in 0..30 {
        let (who, tag) = match i % 3 {
            0 => (&mut alice, "a"),
            1 => (&mut bob, "b"),
            _ => (&mut carol, "c"),
        };
        who.chat(&format!("{tag}{i}"), &format!("{tag}{i}")).await;
    }
    let mut seen = Vec::new();
    for (me, client) in [("a", &mut alice), ("b", &mut bob), ("c", &mut carol)] {
        let mut seqs = Vec::new();
        let mut acks = 0;
        while seqs.len() < 20 || acks < 10 {
            let event = client.next_event().await;
            match event["type"].as_str().unwrap() {
                "chat" => {
                    assert!(!event["text"].as_str().unwrap().starts_with(me), "never your own message back");
                    seqs.push(event["seq"].as_u64().unwrap());
                }
                "ack" => {
                    assert_eq!(event["recipients"], 2, "counted on every node: {event}");
                    acks += 1;
                }
                _ => {}
            }
        }
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{me}: in seq order: {seqs:?}");
        seen.push(seqs);
    }
    let mut all: Vec<u64> = seen.concat();
    all.sort();
    all.dedup();
    assert_eq!(all, (1..=30).collect::<Vec<_>>(), "one sequence for the room across nodes");
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn presence_names_and_history_span_every_node() {
    let redis = Redis::start(false);
    let nodes = nodes(&redis, 2).await;
    let mut alice = Client::named(&nodes[0].url(), "alice").await;
    let mut bob = Client::named(&nodes[1].url(), "bob").await;
    // Each sees the other join and rename, across nodes.
    alice.expect_where("renamed", |e| e["new"] == "bob").await;
    // Names are unique across nodes, look-alikes included.
    let mut other = Client::connect(&nodes[1].url()).await;
    for taken in ["alice", "ALICE", "\u{430}lice"] {
        other.send_json(json!({"type": "username", "name": taken})).await;
        assert_eq!(other.expect("error").await["code"], "name_taken", "{taken}");
    }
    // who and rooms count every node.
    bob.send_text("/who").await;
    let who = bob.expect("who").await;
    let names: Vec<&str> = who["users"].as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap()).collect();
    assert!(names.contains(&"alice") && names.contains(&"bob"), "{names:?}");
    alice.send_json(json!({"type": "join", "room": "rust"})).await;
    alice.expect_where("joined", |e| e["room"] == "rust").await;
    // Another node's view follows within moments (its registration is queued).
    let mut counted = None;
    for _ in 0..40 {
        bob.send_text("/rooms").await;
        let rooms = bob.expect("rooms").await;
        counted = rooms["rooms"].as_array().unwrap().iter().find(|r| r["room"] == "rust").map(|r| r["members"].clone());
        if counted.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(counted, Some(json!(1)));
    // History written on one node, read on the other.
    alice.chat("kept in redis", "h1").await;
    alice.expect_where("ack", |e| e["client_id"] == "h1").await;
    bob.send_json(json!({"type": "history", "room": "rust"})).await;
    let history = bob.expect("history").await;
    assert_eq!(history["messages"][0]["text"], "kept in redis", "{history}");
    // A name freed on one node can be taken on the other.
    drop(alice);
    let mut taker = Client::connect(&nodes[1].url()).await;
    let mut took = false;
    for _ in 0..40 {
        taker.send_json(json!({"type": "username", "name": "alice"})).await;
        let answer = taker.next_event().await;
        if answer["type"] == "renamed" {
            took = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(took, "alice's name was freed when she left");
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn a_killed_nodes_members_leave_within_the_ttl() {
    use common::process::{ServerProcess, server_command};
    let redis = Redis::start(false);
    let survivor = server_with(node_config(&redis)).await;
    let data = tempfile::tempdir().unwrap();
    let command = server_command(
        "127.0.0.1:0",
        data.path(),
        &["--redis", &redis.url(), "--redis-node-ttl", "1500ms", "--history", "memory"],
    );
    let mut doomed = ServerProcess::spawn(command).unwrap();
    let mut watcher = Client::named(&survivor.url(), "watcher").await;
    let _victim = Client::named(&doomed.url, "victim").await;
    watcher.expect_where("renamed", |e| e["new"] == "victim").await;
    doomed.child.kill().unwrap();
    let started = std::time::Instant::now();

    let left = watcher.expect_where("left", |e| e["username"] == "victim").await;
    assert_eq!(left["reason"], "node_lost", "{left}");
    assert!(started.elapsed() < Duration::from_secs(5), "within the TTL and a reaper round: {:?}", started.elapsed());
    watcher.send_json(json!({"type": "username", "name": "victim"})).await;
    watcher.expect_where("renamed", |e| e["new"] == "victim").await;
    let _ = doomed.child.wait();
    survivor.shutdown().await.unwrap();
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn redis_down_refuses_sends_and_redis_back_loses_nothing() {
    let mut redis = Redis::start(false);
    let nodes = nodes(&redis, 2).await;
    let mut alice = Client::named(&nodes[0].url(), "alice").await;
    let mut bob = Client::named(&nodes[1].url(), "bob").await;
    alice.expect_where("renamed", |e| e["new"] == "bob").await;
    alice.chat("before", "c1").await;
    assert_eq!(bob.expect("chat").await["seq"], 1);
    redis.stop();
    alice.chat("while down", "c2").await;
    let refused = alice.expect_where("error", |e| e["client_id"] == "c2").await;
    assert_eq!(refused["code"], "unavailable", "{refused}");
    let (_, health) = common::http_get(nodes[0].addr(), "/healthz").await;
    assert!(health.contains("\"redis\":\"down\""), "{health}");
    // Both stay connected; Redis comes back empty (no persistence).
    redis.restart(false);
    let mut sent = false;
    for attempt in 0..60 {
        let id = format!("c3-{attempt}");
        alice.chat("after", &id).await;
        let answer = loop {
            let event = alice.next_event().await;
            if event["client_id"] == id.as_str() {
                break event;
            }
        };
        if answer["type"] == "ack" {
            sent = true;
            break;
        }
        assert_eq!(answer["code"], "unavailable", "{answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(sent, "sends work again once Redis is back");
    let chat = bob.expect("chat").await;
    assert_eq!(chat["text"], "after");
    assert!(chat["seq"].as_u64().unwrap() > 1, "seq continues past what was delivered: {chat}");
    bob.expect_silence(Duration::from_millis(300)).await;
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn a_subscriber_that_missed_messages_fills_the_hole_from_the_stream() {
    let redis = Redis::start(false);
    let nodes = nodes(&redis, 2).await;
    let mut alice = Client::named(&nodes[0].url(), "alice").await;
    let mut bob = Client::named(&nodes[1].url(), "bob").await;
    alice.expect_where("renamed", |e| e["new"] == "bob").await;
    alice.chat("one", "c1").await;
    assert_eq!(bob.expect("chat").await["seq"], 1);
    // Two messages that reach the room's stream but never its channel, as
    // when a node's subscription dropped while they were published.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    for text in ["lost two", "lost three"] {
        let seq: u64 = redis::cmd("INCR").arg("chorus:{room:lobby}:seq").query(&mut conn).unwrap();
        let record =
            json!({"msg_id": format!("m{seq}"), "user_id": "ux", "username": "ghost", "ts_ms": 1, "text": text});
        let _: String = redis::cmd("XADD")
            .arg("chorus:{room:lobby}:stream")
            .arg(format!("{seq}-1"))
            .arg("r")
            .arg(record.to_string())
            .query(&mut conn)
            .unwrap();
    }
    alice.chat("four", "c4").await;
    let texts: Vec<(u64, String)> = {
        let mut texts = Vec::new();
        while texts.len() < 3 {
            let chat = bob.expect("chat").await;
            texts.push((chat["seq"].as_u64().unwrap(), chat["text"].as_str().unwrap().to_string()));
        }
        texts
    };
    assert_eq!(
        texts,
        [(2, "lost two".to_string()), (3, "lost three".to_string()), (4, "four".to_string())],
        "the hole is filled, in order, before the newer message"
    );
    bob.expect_silence(Duration::from_millis(200)).await;
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

/// `chorus run` against three nodes (`--target` three times): every client
/// spread over them, and the delivery accounting exact across all of them,
/// since an ack's `recipients` counts the members of every node.
#[tokio::test]
#[ignore = "needs redis-server"]
async fn the_harness_spreads_over_nodes_and_accounts_exactly() {
    let redis = Redis::start(false);
    let nodes = nodes(&redis, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("nodes.toml");
    std::fs::write(
        &scenario,
        "name = \"nodes\"\nseed = 7\nramp_up = \"1s\"\nduration = \"2s\"\ndrain = \"2s\"\n\
         [[group]]\nname = \"talkers\"\nclients = 9\nroom = \"hall\"\nrate = 10.0\n\
         [[group]]\nname = \"listeners\"\nclients = 3\nroom = \"hall\"\nrate = 0.0\ntarget = 3\n\
         [thresholds]\n\"delivery.ratio\" = \"== 1.0\"\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_chorus"));
    command.arg("run").arg(&scenario).arg("--out").arg(&out);
    for node in &nodes {
        command.arg("--target").arg(node.url());
    }
    let run = tokio::time::timeout(Duration::from_secs(60), command.output()).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("3 external servers, spread round-robin"), "{stdout}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let d = &summary["delivery"];
    assert!(d["expected"].as_u64().unwrap() > 100, "{d}");
    assert_eq!(d["received"], d["expected"], "{d}");
    assert_eq!((d["lost"].as_u64(), d["duplicated"].as_u64(), d["reordered"].as_u64()), (Some(0), Some(0), Some(0)));
    // Talkers round-robin over the three (ids 0..9: three each); the
    // listeners all on the third, as their group says.
    let targets = summary["targets"].as_array().unwrap();
    let clients: Vec<u64> = targets.iter().map(|t| t["clients"].as_u64().unwrap()).collect();
    assert_eq!(clients, [3, 3, 6], "{targets:?}");
    for (t, node) in targets.iter().zip(&nodes) {
        assert_eq!(t["url"], node.url());
        assert_eq!(t["ok"], t["clients"], "every client connected: {t}");
        assert!(t["received"].as_u64().unwrap() > 0, "{t}");
    }
    let received: u64 = targets.iter().map(|t| t["received"].as_u64().unwrap()).sum();
    assert_eq!(received, d["received"].as_u64().unwrap(), "the targets add up to the run");
}

/// A Redis in cluster mode is refused at start with a clear error, not
/// discovered later as `MOVED` replies turned into refused sends.
#[tokio::test]
#[ignore = "needs redis-server"]
async fn a_redis_cluster_node_is_refused_at_start() {
    let redis = Redis::start_with(false, &["--cluster-enabled", "yes"]);
    let Err(err) = ServerHandle::start("127.0.0.1:0", node_config(&redis)).await else { panic!("refused") };
    let err = format!("{err:#}");
    assert!(err.contains("cluster mode") && err.contains("standalone Redis"), "{err}");
}
