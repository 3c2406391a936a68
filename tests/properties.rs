//! Property tests over everything a client controls before the chat core
//! sees it: the handshake's request head and query, the admission headers
//! (tokens), client frames as bytes (the frame guard) and as text (the
//! protocol decoder), and names. None may panic, whatever the input, and the
//! checks must agree with themselves (the same bytes in any chunking give the
//! same verdict; a normalized name stays the same name).
//!
//! The number of cases is bounded (`PROPTEST_CASES` overrides it), so CI
//! runs them on every change.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Version};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use chorus::names;
use chorus::protocol::decode_client_text;
use chorus::server::auth::token_from;
use chorus::server::net::frames::{FrameInspector, Limits};
use chorus::server::net::http::{check_host, query_pairs};
use chorus::server::net::upgrade;

/// `cases` cases (unless `PROPTEST_CASES` says otherwise); failures are
/// reported with their minimal input, not saved to files.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(cases);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// Header names a handshake cares about, and a few it does not.
fn header_name() -> impl Strategy<Value = HeaderName> {
    prop::sample::select(vec![
        "host",
        "upgrade",
        "connection",
        "origin",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-protocol",
        "authorization",
        "x-anything",
    ])
    .prop_map(HeaderName::from_static)
}

/// Header values: any bytes a header may carry (no control bytes but tab), often
/// close to the values that matter.
fn header_value() -> impl Strategy<Value = HeaderValue> {
    prop_oneof![
        prop::collection::vec(
            any::<u8>().prop_filter("a byte a header value may hold", |b| *b == b'\t' || (*b >= 0x20 && *b != 0x7f)),
            0..40
        )
        .prop_map(|bytes| HeaderValue::from_bytes(&bytes).unwrap()),
        prop::sample::select(vec![
            "websocket",
            "Upgrade",
            "keep-alive, Upgrade",
            "13",
            "dGhlIHNhbXBsZSBub25jZQ==",
            "Bearer abc.def.ghi",
            "bearer",
            "abcdeféxyz",
            "https://chat.example.com",
        ])
        .prop_map(|text| HeaderValue::from_bytes(text.as_bytes()).unwrap()),
    ]
}

fn headers() -> impl Strategy<Value = HeaderMap> {
    prop::collection::vec((header_name(), header_value()), 0..12).prop_map(|lines| {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(name, value);
        }
        map
    })
}

/// Query strings: pieces that percent-encoding, `+`, `&` and `=` make tricky.
fn query() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("room=".to_string()),
            Just("token=".to_string()),
            Just("&".to_string()),
            Just("%".to_string()),
            Just("%FF".to_string()),
            Just("%C3%A9".to_string()),
            Just("+".to_string()),
            "[a-z0-9]{0,4}".prop_map(|s| s),
        ],
        0..10,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn the_handshake_check_never_panics_and_a_pass_is_a_valid_handshake(
        headers in headers(),
        query in query(),
        http_1_0 in any::<bool>(),
    ) {
        let version = if http_1_0 { Version::HTTP_10 } else { Version::HTTP_11 };
        let _ = check_host(version, &headers);
        if let Ok(handshake) = upgrade::check(&Method::GET, version, "/", &query, &headers) {
            prop_assert_eq!(version, Version::HTTP_11);
            prop_assert_eq!(headers.get_all("sec-websocket-key").iter().count(), 1);
            prop_assert_eq!(headers.get_all("origin").iter().count() <= 1, true);
            prop_assert!(upgrade::has_token(&headers, http::header::CONNECTION, "upgrade"));
            prop_assert_eq!(handshake.accept.len(), 28);
            let _ = token_from(&headers, &handshake.query);
        }
    }

    #[test]
    fn query_decoding_never_panics_and_never_invents_replacement_characters(query in query()) {
        if let Ok(pairs) = query_pairs(&query) {
            for (name, value) in pairs {
                prop_assert!(!name.contains('\u{FFFD}') && !value.contains('\u{FFFD}'), "{query:?}");
            }
        }
    }

    #[test]
    fn the_frame_guard_gives_one_verdict_whatever_the_chunking(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        cut in 1usize..64,
    ) {
        let limits = Limits { max_fragments: 8, max_message: 256 };
        let whole = FrameInspector::new(limits).feed(&bytes);
        let mut chunked = FrameInspector::new(limits);
        let pieces: Result<Vec<()>, _> = bytes.chunks(cut).map(|piece| chunked.feed(piece)).collect();
        prop_assert_eq!(whole, pieces.map(|_| ()));
    }

    #[test]
    fn client_text_decoding_never_panics(text in "\\PC{0,200}|\\{.{0,200}|/.{0,60}") {
        let _ = decode_client_text(&text);
    }

    #[test]
    fn names_are_stable_once_normalized(raw in "\\PC{0,40}|[\\u{0}-\\u{3000}]{0,40}") {
        for check in [names::username, names::room] {
            if let Ok(name) = check(&raw) {
                prop_assert_eq!(check(&name), Ok(name.clone()), "normalizing twice changes nothing");
                prop_assert_eq!(names::key(&name), names::key(&raw));
                prop_assert!(name.chars().all(names::allowed_char));
            }
        }
    }
}

/// Random request heads against a live server: it answers or closes, never
/// stops serving.
#[test]
fn a_live_server_survives_random_request_heads() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(common::server());
    let addr = server.addr();
    let head = prop::collection::vec(
        prop_oneof![
            Just("GET / HTTP/1.1\r\n".to_string()),
            Just("GET ws://x/ HTTP/1.1\r\n".to_string()),
            Just("POST /api/login HTTP/1.0\r\n".to_string()),
            Just("Host: x\r\n".to_string()),
            Just("Upgrade: websocket\r\n".to_string()),
            Just("Connection: Upgrade\r\n".to_string()),
            Just("Sec-WebSocket-Version: 13\r\n".to_string()),
            Just("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n".to_string()),
            Just("Authorization: abcdeféxyz\r\n".to_string()),
            Just("Content-Length: 99999999999999999999\r\n".to_string()),
            Just("Transfer-Encoding: chunked\r\n".to_string()),
            Just("\r\n".to_string()),
            "[ -~]{0,30}\r\n".prop_map(|s| s),
            prop::collection::vec(any::<u8>(), 0..20).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ],
        1..12,
    );
    let mut runner = proptest::test_runner::TestRunner::new(config(96));
    runner
        .run(&head, |parts| {
            runtime.block_on(async {
                let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                let _ = tcp.write_all(parts.concat().as_bytes()).await;
                let _ = tcp.shutdown().await;
                let mut sink = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut sink)).await;
            });
            Ok(())
        })
        .unwrap();
    runtime.block_on(async {
        let (status, _) = common::http_get(addr, "/healthz").await;
        assert_eq!(status, 200, "the server still answers");
        let mut client = common::Client::connect(&server.url()).await;
        client.send_text("/who").await;
        client.expect("who").await;
        server.shutdown().await.unwrap();
    });
}
