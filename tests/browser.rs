//! The web client (`web/`) end to end, in headless Chromium: people in
//! browsers chatting with each other and with a protocol client, renames,
//! a server restart, a reload, and network text that must stay text.
//!
//! These need Debian's `chromium` and `chromium-driver`, so they are
//! ignored by a plain `cargo test`; `.ci/run` installs both and runs them
//! (`cargo test -- --include-ignored`). A failing test leaves screenshots in
//! `target/browser-screenshots/`.

mod common;
mod web;

use std::time::Duration;

use serde_json::json;

use chorus::server::{HistoryConfig, ServerHandle};
use common::Client;
use web::{Driver, Page, checked, screenshot_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromium-driver (apt)"]
async fn two_browsers_and_a_protocol_client_chat() {
    let server = common::server().await;
    let driver = Driver::start().await;
    let alice = Page::open(&driver, server.addr(), "alice").await;
    let bob = Page::open(&driver, server.addr(), "bob").await;
    checked("chat", &[&alice, &bob], async {
        alice.rename("alice").await;
        bob.rename("bob").await;
        let mut carol = Client::named(&server.url(), "carol").await;
        alice.wait_people(&["alice", "bob", "carol"]).await;

        alice.type_line("hello from alice").await;
        let seen = bob.wait_message("alice", "hello from alice").await;
        assert_eq!(seen["own"], false, "bob's copy is not marked as his own");
        let heard = carol.expect_where("chat", |e| e["text"] == "hello from alice").await;
        assert_eq!(heard["from"], "alice");
        // Alice's own line is shown at once, then confirmed by the ack with the message's seq.
        let mine = alice
            .wait_js(
                "alice's line confirmed",
                "const li = [...document.querySelectorAll('#messages li.msg.own')]
                   .find(li => li.querySelector('.body').textContent === 'hello from alice');
                 return li && li.dataset.state === 'confirmed' ? Number(li.dataset.seq) : null",
                vec![],
            )
            .await;
        assert_eq!(mine, heard["seq"], "the confirmed line carries the seq the others saw");

        carol.chat("hi, browsers", "c1").await;
        alice.wait_message("carol", "hi, browsers").await;
        bob.wait_message("carol", "hi, browsers").await;

        bob.type_line("hey alice").await;
        bob.type_line("still me").await;
        alice.wait_message("bob", "hey alice").await;
        alice.wait_message("bob", "still me").await;
        carol.expect_where("chat", |e| e["text"] == "still me").await;
        // Two lines in a row from bob: the second is grouped under the first's name.
        let grouped = alice
            .js(
                "const lines = [...document.querySelectorAll('#messages li.msg')].filter(li => li.dataset.from === 'bob');
                 return lines.map(li => li.classList.contains('cont'))",
                vec![],
            )
            .await;
        assert_eq!(grouped, json!([false, true]));

        // Binary both ways: size and a hex preview.
        carol.send_binary(&[0xde, 0xad, 0xbe, 0xef]).await;
        let binary = bob.wait_message("carol", "binary 4 B de ad be ef").await;
        assert_eq!(binary["own"], false);
        alice.type_line("/binary hi!").await;
        let (event, bytes) = loop {
            let event = carol.expect("binary").await;
            if let tokio_tungstenite::tungstenite::Message::Binary(bytes) = carol.next_message().await {
                break (event, bytes);
            }
        };
        assert_eq!(event["from"], "alice");
        assert_eq!(&bytes[..], b"hi!");
        bob.wait_message("alice", "binary 3 B 68 69 21").await;

        // The rooms panel counts the lobby's three members.
        alice
            .wait_js(
                "the lobby with 3 members",
                "const b = document.querySelector('#room-list button[data-room=\"lobby\"]');
                 return b && b.querySelector('.members').textContent === '3'",
                vec![],
            )
            .await;
        bob.screenshot(&screenshot_dir().join("web-client-chat.png")).await;
    })
    .await;
    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromium-driver (apt)"]
async fn a_rename_shows_for_everyone() {
    let server = common::server().await;
    let driver = Driver::start().await;
    let alice = Page::open(&driver, server.addr(), "alice").await;
    let bob = Page::open(&driver, server.addr(), "bob").await;
    checked("rename", &[&alice, &bob], async {
        alice.rename("alice").await;
        bob.rename("bob").await;
        let mut carol = Client::named(&server.url(), "carol").await;
        bob.wait_people(&["alice", "bob", "carol"]).await;

        // Keyboard only: the name button opens a dialog; type, Enter.
        let button = alice.client.find(fantoccini::Locator::Id("name-button")).await.unwrap();
        button.click().await.unwrap();
        let field = alice.client.find(fantoccini::Locator::Id("name-input")).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys("alicia\u{E007}").await.unwrap();
        alice.wait_name("alicia").await;
        alice.wait_notice("You are now alicia").await;

        bob.wait_notice("alice is now alicia").await;
        bob.wait_people(&["alicia", "bob", "carol"]).await;
        let renamed = carol.expect("renamed").await;
        assert_eq!((renamed["old"].as_str(), renamed["new"].as_str()), (Some("alice"), Some("alicia")));

        // A taken name is refused in the dialog, and the name stays.
        let button = bob.client.find(fantoccini::Locator::Id("name-button")).await.unwrap();
        button.click().await.unwrap();
        let field = bob.client.find(fantoccini::Locator::Id("name-input")).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys("carol\u{E007}").await.unwrap();
        bob.wait_js(
            "the name_taken error in the dialog",
            "return document.getElementById('name-error').textContent.length > 0",
            vec![],
        )
        .await;
        bob.wait_name("bob").await;
    })
    .await;
    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromium-driver (apt)"]
async fn after_a_server_restart_the_page_reconnects_and_shows_what_it_missed() {
    let data = tempfile::tempdir().unwrap();
    let mut config = common::quick_close();
    config.history = HistoryConfig::sqlite();
    config.data_dir = data.path().to_path_buf();
    let server = common::server_with(config.clone()).await;
    let addr = server.addr();
    let driver = Driver::start().await;
    let alice = Page::open(&driver, addr, "alice").await;
    checked("restart", &[&alice], async {
        alice.rename("alice").await;
        let mut carol = Client::named(&server.url(), "carol").await;
        carol.chat("before the restart", "c1").await;
        alice.wait_message("carol", "before the restart").await;
        drop(carol);

        server.shutdown().await.unwrap();
        alice.wait_notice("Disconnected").await;
        // Wait for one failed attempt: the next is at least a second away,
        // so what carol says next happens while alice is away.
        alice
            .wait_js(
                "a failed reconnect",
                "return Number(document.getElementById('status').dataset.attempt) >= 2",
                vec![],
            )
            .await;
        alice.type_line("typed while offline").await;
        let unsent = alice.wait_message("alice", "typed while offline").await;
        assert_eq!(unsent["state"], "unsent", "a line typed offline is marked as not sent yet");
        let banner = alice.js("return document.getElementById('banner').textContent", vec![]).await;
        assert!(banner.as_str().unwrap().contains("Reconnecting in"), "the page says it reconnects: {banner}");

        let server = ServerHandle::start(&addr.to_string(), config).await.unwrap();
        let mut carol = Client::named(&server.url(), "carol").await;
        carol.chat("missed one", "c2").await;
        carol.chat("missed two", "c3").await;
        carol.expect_where("ack", |e| e["client_id"] == "c3").await;

        alice.wait_connected().await;
        alice.wait_message("carol", "missed one").await;
        alice.wait_message("carol", "missed two").await;
        alice.wait_notice("2 messages you missed are shown above").await;
        // The line typed offline went out after the reconnect, once.
        let late = carol.expect_where("chat", |e| e["text"] == "typed while offline").await;
        assert_eq!(late["from"], "alice");
        alice
            .wait_js(
                "the offline line confirmed",
                "return [...document.querySelectorAll('#messages li.msg.own')]
                   .some(li => li.dataset.state === 'confirmed' && li.querySelector('.body').textContent === 'typed while offline')",
                vec![],
            )
            .await;
        // Nothing twice, everything in seq order.
        let lines = alice.messages().await;
        let seqs: Vec<u64> = lines.as_array().unwrap().iter().filter_map(|m| m["seq"].as_u64()).collect();
        let mut sorted = seqs.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(seqs, sorted, "seqs on screen: {lines:#}");
        assert_eq!(seqs.len(), 4, "before, missed one, missed two, typed while offline: {lines:#}");
        server.shutdown().await.unwrap();
    })
    .await;
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromium-driver (apt)"]
async fn a_reload_keeps_the_name_and_shows_the_room_again() {
    let server = common::server().await;
    let driver = Driver::start().await;
    let alice = Page::open(&driver, server.addr(), "alice").await;
    checked("reload", &[&alice], async {
        alice.rename("alice").await;
        alice.type_line("/join rust").await;
        alice
            .wait_js("#rust on screen", "return document.getElementById('room-title').textContent === '#rust'", vec![])
            .await;
        alice.type_line("said before the reload").await;
        alice
            .wait_js(
                "the line confirmed",
                "return document.querySelector('#messages li.msg.own')?.dataset.state === 'confirmed'",
                vec![],
            )
            .await;

        alice.client.refresh().await.unwrap();
        alice.wait_connected().await;
        alice.wait_name("alice").await;
        alice
            .wait_js("#rust again", "return document.getElementById('room-title').textContent === '#rust'", vec![])
            .await;
        let line = alice.wait_message("alice", "said before the reload").await;
        assert_eq!(line["own"], true, "a stored line under your name is shown as yours");

        let mut carol = Client::named(&server.url(), "carol").await;
        carol.send_json(json!({"type": "join", "room": "rust"})).await;
        carol.send_json(json!({"type": "who"})).await;
        let who = carol.expect("who").await;
        let names: Vec<&str> = who["users"].as_array().unwrap().iter().filter_map(|u| u["username"].as_str()).collect();
        assert!(names.contains(&"alice"), "the others see the restored name: {who}");
    })
    .await;
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromium-driver (apt)"]
async fn markup_stays_text_and_invisible_characters_show() {
    let server = common::server().await;
    let driver = Driver::start().await;
    let alice = Page::open(&driver, server.addr(), "alice").await;
    checked("markup", &[&alice], async {
        let mut mallory = Client::named(&server.url(), "mallory").await;
        let markup = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\"><b>bold?</b>";
        mallory.chat(markup, "m1").await;
        mallory.chat("invoice_\u{202E}fdp.exe and a\u{200B}b, 👩\u{200D}💻 stays", "m2").await;
        alice.wait_message("mallory", markup).await;
        alice.wait_message("mallory", "invoice_⟨U+202E⟩fdp.exe and a⟨U+200B⟩b, 👩\u{200D}💻 stays").await;
        let page = alice
            .js(
                "return { pwned: window.__pwned ?? null,
                          elements: document.querySelectorAll('#messages script, #messages img, #messages b').length }",
                vec![],
            )
            .await;
        assert_eq!(page, json!({"pwned": null, "elements": 0}), "markup from the network stays text");
        // The page's own headers and notices never take HTML either (a notice quotes a name).
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(alice.client.find(fantoccini::Locator::Css("#messages img")).await.is_err());
    })
    .await;
    alice.close().await;
}
