//! The server as clients see it: real WebSocket connections on port 0.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Client, WAIT, code, server, server_with};
use futures_util::SinkExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use chorus::server::{HistoryConfig, ServerConfig, SessionConfig};

#[tokio::test]
async fn broadcast_reaches_every_other_member_and_not_the_sender() {
    let server = server().await;
    let url = server.url();
    let mut alice = Client::named(&url, "alice").await;
    let mut bob = Client::named(&url, "bob").await;
    let mut carol = Client::named(&url, "carol").await;
    // Settle the join/rename notices.
    alice.settle(Duration::from_millis(100)).await;
    bob.settle(Duration::from_millis(50)).await;

    alice.chat("hello room", "c-1").await;
    let ack = alice.next_event().await;
    assert_eq!(ack["type"], "ack", "the sender gets an ack, not its own message: {ack}");
    assert_eq!(ack["client_id"], "c-1");
    assert_eq!(ack["recipients"], 2);
    assert_eq!(ack["seq"], 1);
    for other in [&mut bob, &mut carol] {
        let chat = other.expect("chat").await;
        assert_eq!(chat["text"], "hello room");
        assert_eq!(chat["from"], "alice");
        assert_eq!(chat["user_id"], alice.user_id);
        assert_eq!(chat["room"], "lobby");
        assert_eq!(chat["seq"], 1);
        assert_eq!(chat["client_id"], "c-1");
        assert_eq!(chat["msg_id"], ack["msg_id"]);
        assert!(chat["ts"].as_str().unwrap().ends_with('Z'));
    }
    alice.expect_silence(Duration::from_millis(200)).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn seq_increases_by_one_and_arrives_in_order() {
    let server = server().await;
    let url = server.url();
    let mut alice = Client::named(&url, "alice").await;
    let mut bob = Client::named(&url, "bob").await;
    let mut reader = Client::named(&url, "reader").await;
    for i in 0..100 {
        let (who, tag) = if i % 2 == 0 { (&mut alice, "a") } else { (&mut bob, "b") };
        who.chat(&format!("{tag}{i}"), &format!("{tag}{i}")).await;
    }
    for expected in 1..=100u64 {
        let chat = reader.expect("chat").await;
        assert_eq!(chat["seq"], expected);
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn join_leave_and_rename_notices() {
    let server = server().await;
    let url = server.url();
    let mut alice = Client::connect(&url).await;
    let mut bob = Client::connect(&url).await;
    let joined = alice.next_event().await;
    assert_eq!(joined["type"], "joined");
    assert_eq!(joined["user_id"], bob.user_id);
    assert_eq!(joined["username"], bob.username);
    assert_eq!(joined["room"], "lobby");

    bob.send_json(json!({"type": "username", "name": "bobby"})).await;
    let renamed = alice.next_event().await;
    assert_eq!(renamed["type"], "renamed");
    assert_eq!(renamed["old"], bob.username);
    assert_eq!(renamed["new"], "bobby");
    assert_eq!(bob.next_event().await["type"], "renamed", "the renamer gets the notice too");

    bob.ws.close(None).await.unwrap();
    let left = alice.next_event().await;
    assert_eq!(left["type"], "left");
    assert_eq!(left["username"], "bobby");
    assert_eq!(left["reason"], "quit");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn rooms_isolate_traffic_and_presence_lists_members() {
    let server = server().await;
    let url = server.url();
    let mut alice = Client::named(&url, "alice").await;
    let mut bob = Client::named(&url, "bob").await;
    let mut carol = Client::named(&url, "carol").await;

    carol.send_json(json!({"type": "join", "room": "rust"})).await;
    let joined = carol.expect("joined").await;
    assert_eq!(joined["room"], "rust");
    let left = alice.expect("left").await;
    assert_eq!((left["username"].as_str(), left["reason"].as_str()), (Some("carol"), Some("moved")));

    carol.chat("only for rust", "r1").await;
    assert_eq!(carol.expect("ack").await["recipients"], 0);
    alice.chat("only for lobby", "l1").await;
    assert_eq!(alice.expect("ack").await["recipients"], 1);
    assert_eq!(bob.expect("chat").await["text"], "only for lobby");
    carol.expect_silence(Duration::from_millis(200)).await;

    bob.send_json(json!({"type": "join", "room": "rust"})).await;
    assert_eq!(carol.expect("joined").await["username"], "bob");
    bob.expect("joined").await;
    bob.send_json(json!({"type": "who"})).await;
    let who = bob.expect("who").await;
    assert_eq!(who["room"], "rust");
    let mut names: Vec<&str> =
        who["users"].as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["bob", "carol"]);
    assert!(who["users"][0]["since"].is_string() && who["users"][0]["user_id"].is_string());

    alice.send_json(json!({"type": "rooms"})).await;
    let rooms = alice.expect("rooms").await;
    assert_eq!(rooms["rooms"], json!([{"room": "lobby", "members": 1}, {"room": "rust", "members": 2}]));

    // A message addressed to another room is refused, not delivered.
    alice.send_json(json!({"type": "chat", "text": "sneaky", "room": "rust", "client_id": "x"})).await;
    let error = alice.expect("error").await;
    assert_eq!((error["code"].as_str(), error["client_id"].as_str()), (Some("not_in_room"), Some("x")));
    carol.expect_silence(Duration::from_millis(200)).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn binary_is_relayed_byte_exact_right_after_its_announcement() {
    let server = server().await;
    let url = server.url();
    let mut alice = Client::named(&url, "alice").await;
    let mut bob = Client::named(&url, "bob").await;
    alice.settle(Duration::from_millis(100)).await;
    let payload: Vec<u8> = (0..=255u8).chain([0, 0xff, 0x7f]).collect();
    alice.send_binary(&payload).await;
    let ack = alice.expect("ack").await;
    assert_eq!(ack["recipients"], 1);
    assert!(ack.get("client_id").is_none());
    let announce = bob.expect("binary").await;
    assert_eq!(announce["bytes"], payload.len());
    assert_eq!(announce["from"], "alice");
    assert_eq!(announce["seq"], ack["seq"]);
    match bob.next_message().await {
        Message::Binary(data) => assert_eq!(&data[..], &payload[..]),
        other => panic!("expected the binary frame right after its announcement, got {other:?}"),
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn usernames_are_unique_case_insensitively_and_validated() {
    let server = server().await;
    let url = server.url();
    let _alice = Client::named(&url, "Alice").await;
    let mut bob = Client::connect(&url).await;
    for (name, code) in [
        ("alice", "name_taken"),
        ("ALICE", "name_taken"),
        ("", "invalid_name"),
        ("two words", "invalid_name"),
        ("x".repeat(33).as_str(), "invalid_name"),
    ] {
        bob.send_json(json!({"type": "username", "name": name})).await;
        let error = bob.expect("error").await;
        assert_eq!(error["code"], code, "name {name:?}: {error}");
    }
    bob.send_json(json!({"type": "username", "name": "bob"})).await;
    assert_eq!(bob.expect("renamed").await["new"], "bob");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_requests_get_errors_and_the_connection_stays_usable() {
    let server = server().await;
    let url = server.url();
    let mut alice = Client::named(&url, "alice").await;
    let mut bob = Client::named(&url, "bob").await;
    alice.settle(Duration::from_millis(100)).await;
    for (frame, code) in [
        ("{not json", "invalid_json"),
        ("{\"text\":\"no type\"}", "unknown_type"),
        ("{\"type\":\"dance\"}", "unknown_type"),
        ("{\"type\":\"chat\"}", "invalid_frame"),
        ("{\"type\":\"join\",\"room\":\"two words\"}", "invalid_room"),
        ("{\"type\":\"history\",\"limit\":0}", "invalid_frame"),
        ("/frobnicate", "unknown_command"),
    ] {
        alice.send_text(frame).await;
        let error = alice.expect("error").await;
        assert_eq!(error["code"], code, "frame {frame:?}: {error}");
        assert!(!error["message"].as_str().unwrap().is_empty());
    }
    let long_id = "c".repeat(65);
    alice.send_json(json!({"type": "chat", "text": "x", "client_id": long_id})).await;
    assert_eq!(alice.expect("error").await["code"], "invalid_client_id");
    bob.expect_silence(Duration::from_millis(100)).await;

    alice.chat("still here", "ok").await;
    assert_eq!(alice.expect("ack").await["recipients"], 1);
    assert_eq!(bob.expect("chat").await["text"], "still here");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn plain_text_and_slash_commands_work_without_json() {
    let server = server().await;
    let url = server.url();
    let mut raw = Client::connect(&url).await;
    let mut bob = Client::named(&url, "bob").await;
    raw.send_text("/username wscat").await;
    raw.expect_where("renamed", |e| e["new"] == "wscat").await;
    raw.send_text("hello from a raw tool").await;
    assert_eq!(raw.expect("ack").await["recipients"], 1);
    let chat = bob.expect("chat").await;
    assert_eq!((chat["text"].as_str(), chat["from"].as_str()), (Some("hello from a raw tool"), Some("wscat")));
    assert!(chat.get("client_id").is_none());
    raw.send_text("//not a command").await;
    raw.expect("ack").await;
    assert_eq!(bob.expect("chat").await["text"], "/not a command");
    raw.send_text("/who").await;
    assert_eq!(raw.expect("who").await["users"].as_array().unwrap().len(), 2);
    raw.send_text("/rooms").await;
    raw.expect("rooms").await;
    raw.send_text("/join side").await;
    assert_eq!(raw.expect("joined").await["room"], "side");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_oversize_message_closes_with_1009_and_others_carry_on() {
    let server = server().await;
    let url = server.url();
    let mut alice = Client::named(&url, "alice").await;
    let mut bob = Client::named(&url, "bob").await;
    alice.settle(Duration::from_millis(100)).await;
    bob.send_binary(&vec![7u8; 64 * 1024 + 1]).await;
    assert_eq!(code(&bob.expect_close().await), 1009);
    let left = alice.expect("left").await;
    assert_eq!(left["reason"], "too_big");
    // Exactly at the limit is fine.
    let mut carol = Client::named(&url, "carol").await;
    carol.send_binary(&vec![1u8; 64 * 1024]).await;
    assert_eq!(carol.expect("ack").await["recipients"], 1);
    assert_eq!(alice.expect("binary").await["bytes"], 64 * 1024);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let server = server().await;
    let url = server.url();
    let mut alice = Client::named(&url, "alice").await;
    let mut bad = Client::named(&url, "bad").await;
    alice.settle(Duration::from_millis(100)).await;
    let frame = Frame::message(vec![b'h', b'i', 0xff, 0xfe], OpCode::Data(Data::Text), true);
    bad.ws.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(code(&bad.expect_close().await), 1007);
    assert_eq!(alice.expect("left").await["reason"], "bad_utf8");
    server.shutdown().await.unwrap();
}

/// Open a WebSocket by hand on a socket with a tiny receive buffer, and never read.
async fn never_reading_client(addr: std::net::SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    common::upgrade_raw(socket.connect(addr).await.unwrap(), addr).await
}

#[tokio::test]
async fn a_client_that_never_reads_does_not_stall_the_room() {
    // With history off, overflow closes at once (tests/history.rs covers `gap`).
    let config = ServerConfig {
        // The talker sends 3,000 messages as fast as the room takes them:
        // far over the per-connection rate limit, which is not under test here.
        session: SessionConfig { max_queue_bytes: 1 << 20, rate_limit: None, ..common::quick_close().session },
        history: HistoryConfig::off(),
        ..common::quick_close()
    };
    let server = server_with(config).await;
    let url = server.url();
    let mut talker = Client::named(&url, "talker").await;
    let mut listener = Client::named(&url, "listener").await;
    let _stuck = never_reading_client(server.addr()).await;
    listener.expect("joined").await;
    talker.settle(Duration::from_millis(100)).await;

    // ~24 MB of fan-out in lock-step batches: far more than the stuck
    // client's socket buffers and queue, never much for the listener.
    let text = "x".repeat(8 * 1024);
    let mut left_reason = None;
    let mut seen = 0u64;
    for batch in 0..60 {
        for i in 0..50 {
            talker.chat(&text, &format!("m{batch}-{i}")).await;
        }
        while seen < (batch + 1) * 50 {
            let event = listener.next_event().await;
            match event["type"].as_str() {
                Some("chat") => {
                    seen += 1;
                    assert_eq!(event["seq"], seen, "the listener misses nothing and sees order kept");
                }
                Some("left") => left_reason = event["reason"].as_str().map(str::to_owned),
                _ => {}
            }
        }
    }
    if left_reason.is_none() {
        left_reason = listener.expect("left").await["reason"].as_str().map(str::to_owned);
    }
    assert_eq!(left_reason.as_deref(), Some("slow"), "the stuck client is dropped as a slow consumer");
    talker.chat("after", "after").await;
    let ack = talker.expect_where("ack", |e| e["client_id"] == "after").await;
    assert_eq!(ack["recipients"], 1, "only the listener remains");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_silent_peer_is_timed_out_by_keepalive() {
    let config = ServerConfig {
        session: SessionConfig {
            ping_interval: Duration::from_millis(200),
            pong_timeout: Duration::from_millis(200),
            ..common::quick_close().session
        },
        ..common::quick_close()
    };
    let server = server_with(config).await;
    let url = server.url();
    let mut alice = Client::named(&url, "alice").await;
    let _silent = never_reading_client(server.addr()).await;
    alice.expect("joined").await;
    // alice's own client answers pings (tungstenite does so as it reads), so only the silent one goes.
    let left = alice.expect("left").await;
    assert_eq!(left["reason"], "timeout");
    alice.send_text("/who").await;
    assert_eq!(alice.expect("who").await["users"].as_array().unwrap().len(), 1);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_every_connection_with_1001() {
    let server = server().await;
    let url = server.url();
    let mut alice = Client::connect(&url).await;
    let mut bob = Client::connect(&url).await;
    let addr = server.addr();
    let started = std::time::Instant::now();
    let shutdown = tokio::spawn(server.shutdown());
    for client in [&mut alice, &mut bob] {
        let frame = client.expect_close().await;
        assert_eq!(code(&frame), 1001);
    }
    shutdown.await.unwrap().unwrap();
    assert!(started.elapsed() < WAIT, "shutdown is prompt when clients answer the close");
    assert!(TcpStream::connect(addr).await.is_err(), "no longer accepting");
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_with_503() {
    let server = server_with(ServerConfig { max_connections: 2, ..common::quick_close() }).await;
    let url = server.url();
    let first = Client::connect(&url).await;
    let _second = Client::connect(&url).await;
    let refused = tokio_tungstenite::connect_async(&url).await.unwrap_err();
    match refused {
        tokio_tungstenite::tungstenite::Error::Http(response) => assert_eq!(response.status(), 503),
        other => panic!("expected HTTP 503, got {other}"),
    }
    drop(first);
    // The freed slot can be taken again.
    let mut retry = None;
    for _ in 0..50 {
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(&url).await {
            retry = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(retry.is_some(), "a slot frees up when a client leaves");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn connections_count_from_accept_not_from_the_upgrade() {
    let server = server_with(ServerConfig { max_connections: 2, ..common::quick_close() }).await;
    let url = server.url();
    // Two connections that never finish a handshake hold both slots.
    let idle_a = TcpStream::connect(server.addr()).await.unwrap();
    let idle_b = TcpStream::connect(server.addr()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("expected HTTP 503 while two half-open connections are held, got {:?}", other.map(|_| ())),
    }
    drop((idle_a, idle_b));
    let mut admitted = false;
    for _ in 0..50 {
        if tokio_tungstenite::connect_async(&url).await.is_ok() {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(admitted, "the slots come back when the idle connections close");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_connection_that_never_sends_a_request_is_closed() {
    let server =
        server_with(ServerConfig { handshake_timeout: Duration::from_millis(300), ..common::quick_close() }).await;
    let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(WAIT, tcp.read(&mut buf)).await.expect("the server closes the idle socket");
    assert_eq!(read.unwrap_or(0), 0, "closed without a response");
    server.shutdown().await.unwrap();
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn health_metrics_and_the_web_page_over_plain_http() {
    let server = server().await;
    let _alice = Client::connect(&server.url()).await;
    let (status, body) = http_get(server.addr(), "/healthz").await;
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["connections"], 1);
    assert_eq!(health["rooms"], 1);
    assert!(health["uptime_secs"].is_u64());

    let (status, body) = http_get(server.addr(), "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("chorus_connections 1\n"), "{body}");
    // Histograms with buckets, and the standard process metrics.
    assert!(body.contains("# TYPE chorus_handshake_seconds histogram"), "{body}");
    assert!(body.contains("chorus_handshake_seconds_count 1\n"), "{body}");
    assert!(body.contains("chorus_tcp_connections "), "{body}");
    assert!(body.contains("process_resident_memory_bytes "), "{body}");
    assert!(body.contains("process_open_fds "), "{body}");

    let (status, body) = http_get(server.addr(), "/").await;
    assert_eq!(status, 200);
    assert!(body.contains("<title>chorus</title>"));
    assert_eq!(http_get(server.addr(), "/nope").await.0, 404);
    assert_eq!(http_get(server.addr(), "/ws").await.0, 426);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_ws_path_is_a_websocket_endpoint_too() {
    let server = server().await;
    let url = format!("ws://{}/ws", server.addr());
    let mut alice = Client::connect(&url).await;
    alice.send_text("/who").await;
    alice.expect("who").await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_room_can_be_chosen_at_the_handshake() {
    let server = server().await;
    let mut carol = Client::named(&format!("{}?room=rust", server.url()), "carol").await;
    let mut alice = Client::connect(&format!("{}?room=rust", server.url())).await;
    let joined = carol.expect("joined").await;
    assert_eq!((joined["room"].as_str(), joined["user_id"].as_str()), (Some("rust"), Some(alice.user_id.as_str())));
    alice.chat("hi rust", "h1").await;
    assert_eq!(alice.expect("ack").await["recipients"], 1);
    assert_eq!(carol.expect("chat").await["room"], "rust");
    // Percent-encoded names work; a bad one is refused before the upgrade.
    let mut dev = Client::connect(&format!("{}?room=caf%C3%A9", server.url())).await;
    dev.send_text("/who").await;
    assert_eq!(dev.expect("who").await["room"], "café");
    let refused = tokio_tungstenite::connect_async(format!("{}?room=two%20words", server.url())).await.unwrap_err();
    match refused {
        tokio_tungstenite::tungstenite::Error::Http(response) => assert_eq!(response.status(), 400),
        other => panic!("expected HTTP 400, got {other}"),
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn big_rooms_stop_announcing_every_join_and_leave() {
    let server = server_with(ServerConfig { presence_limit: 2, ..common::quick_close() }).await;
    let url = server.url();
    let mut alice = Client::connect(&url).await;
    let _bob = Client::connect(&url).await;
    assert_eq!(alice.expect("joined").await["type"], "joined", "within the limit, joins are announced");
    let mut carol = Client::connect(&url).await;
    alice.expect_silence(Duration::from_millis(200)).await;
    carol.send_text("/username carol").await;
    assert_eq!(carol.expect("renamed").await["new"], "carol", "the renamer is still told");
    carol.send_text("/who").await;
    assert_eq!(carol.expect("who").await["users"].as_array().unwrap().len(), 3, "who lists everyone");
    carol.ws.close(None).await.unwrap();
    // Back within the limit as carol leaves: the room hears of it.
    let left = alice.expect("left").await;
    assert_eq!(left["username"], "carol");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_look_alike_or_invisible_variant_of_a_present_name_is_refused() {
    let server = server().await;
    let url = server.url();
    let mut alice = Client::named(&url, "alice").await;
    let mut other = Client::connect(&url).await;
    for (name, code) in [
        ("alice\u{200B}", "invalid_name"),
        ("\u{430}lice", "name_taken"),
        ("ALICE", "name_taken"),
        ("\u{3164}", "invalid_name"),
        ("\u{2800}", "invalid_name"),
    ] {
        other.send_json(json!({"type": "username", "name": name})).await;
        let error = other.expect("error").await;
        assert_eq!(error["code"], code, "{name:?}: {error}");
        assert!(!error["message"].as_str().unwrap().is_empty());
    }
    // 20 accented letters written with combining marks: 20 characters.
    let marked = "q\u{303}".repeat(20);
    other.send_json(json!({"type": "username", "name": marked})).await;
    other.expect_where("renamed", |e| e["new"] == marked.as_str()).await;
    alice.send_text("/who").await;
    let who = alice.expect("who").await;
    let names: Vec<&str> = who["users"].as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap()).collect();
    assert_eq!(names.iter().filter(|n| n.contains("lice")).count(), 1, "{names:?}");
    server.shutdown().await.unwrap();
}
