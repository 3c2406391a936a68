//! The web client (`web/`) end to end, in headless Chromium: people in
//! browsers chatting with each other and with a protocol client, renames,
//! a server restart, a reload, and network text that must stay text.
//!
//! These need Debian's `chromium` and `chromium-driver`, so they are
//! ignored by a plain `cargo test`; `.ci/run` installs both and runs them
//! (`cargo test -- --include-ignored`). A failing test leaves screenshots in
//! `target/browser-screenshots/`.

#![allow(clippy::unwrap_used)]

mod common;
mod web;

use std::time::Duration;

use serde_json::json;

use chorus::server::auth::AuthMode;
use chorus::server::net::tls::TlsSource;
use chorus::server::{FileLimits, HistoryConfig, SecurityConfig, ServerConfig, ServerHandle};
use common::Client;
use web::{Driver, Page, checked, screenshot_dir};

/// Script: an own line with the text `arguments[0]` is confirmed by the server.
const CONFIRMED: &str = "return [...document.querySelectorAll('#messages li.msg.own')]
    .some(li => li.dataset.state === 'confirmed' && li.querySelector('.body').textContent === arguments[0])";

/// Script: the room on screen is `arguments[0]`.
const IN_ROOM: &str = "return document.getElementById('room-title').textContent === '#' + arguments[0]";

/// Script: the rooms panel shows `arguments[1]` unread for room `arguments[0]`.
const UNREAD: &str = "const b = document.querySelector(`#room-list button[data-room=\"${arguments[0]}\"]`);
    return b?.querySelector('.unread')?.textContent === arguments[1]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromium-driver (apt)"]
async fn two_browsers_and_a_protocol_client_chat() {
    let server = common::server().await;
    let driver = Driver::start().await;
    let alice = Page::named(&driver, server.addr(), "alice").await;
    let bob = Page::named(&driver, server.addr(), "bob").await;
    checked("chat", &[&alice, &bob], async {
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
async fn rooms_are_created_switched_by_click_and_count_what_you_missed() {
    let server = common::server().await;
    let driver = Driver::start().await;
    let alice = Page::named(&driver, server.addr(), "alice").await;
    checked("rooms", &[&alice], async {
        // Create a room with the panel's form, keyboard only.
        let field = alice.client.find(fantoccini::Locator::Id("new-room")).await.unwrap();
        field.send_keys("design\u{E007}").await.unwrap();
        alice.wait_js("#design on screen", IN_ROOM, vec![json!("design")]).await;
        alice.wait_notice("You joined #design").await;
        alice.type_line("first draft is up").await;
        alice.wait_js("the line confirmed", CONFIRMED, vec![json!("first draft is up")]).await;

        // Back to the lobby by clicking it in the list.
        let lobby = alice.client.find(fantoccini::Locator::Css("#room-list button[data-room='lobby']")).await.unwrap();
        lobby.click().await.unwrap();
        alice.wait_js("back in the lobby", IN_ROOM, vec![json!("lobby")]).await;

        // Two messages in #design while alice is away; someone joining the lobby refreshes the list.
        let mut nora = Client::named(&format!("{}?room=design", server.url()), "nora").await;
        nora.chat("looks good", "n1").await;
        nora.chat("ship it", "n2").await;
        nora.expect_where("ack", |e| e["client_id"] == "n2").await;
        let _sam = Client::named(&server.url(), "sam").await;
        alice.wait_js("2 unread in #design", UNREAD, vec![json!("design"), json!("2")]).await;
        let label = alice
            .js(
                "return document.querySelector('#room-list button[data-room=\"design\"]').getAttribute('aria-label')",
                vec![],
            )
            .await;
        assert_eq!(label, "#design, 1 member, 2 unread", "screen readers hear the counts");

        let design =
            alice.client.find(fantoccini::Locator::Css("#room-list button[data-room='design']")).await.unwrap();
        design.click().await.unwrap();
        alice.wait_js("#design again", IN_ROOM, vec![json!("design")]).await;
        alice.wait_message("nora", "ship it").await;
        let line = alice.wait_message("alice", "first draft is up").await;
        assert_eq!(line["own"], true);
        let unread =
            alice.js("return document.querySelectorAll('#room-list .unread:not([hidden])').length", vec![]).await;
        assert_eq!(unread, 0, "the room on screen has nothing unread");
    })
    .await;
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromium-driver (apt)"]
async fn a_rename_shows_for_everyone() {
    let server = common::server().await;
    let driver = Driver::start().await;
    let alice = Page::named(&driver, server.addr(), "alice").await;
    let bob = Page::named(&driver, server.addr(), "bob").await;
    checked("rename", &[&alice, &bob], async {
        let mut carol = Client::named(&server.url(), "carol").await;
        bob.wait_people(&["alice", "bob", "carol"]).await;

        // Keyboard only: the name button opens a dialog; type, Enter.
        alice.rename_in_dialog("alicia").await;
        alice.wait_name("alicia").await;
        alice.wait_notice("You are now alicia").await;

        bob.wait_notice("alice is now alicia").await;
        bob.wait_people(&["alicia", "bob", "carol"]).await;
        let renamed = carol.expect("renamed").await;
        assert_eq!((renamed["old"].as_str(), renamed["new"].as_str()), (Some("alice"), Some("alicia")));

        // A taken name is refused in the dialog, and the name stays.
        bob.rename_in_dialog("carol").await;
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
        alice.wait_js("the offline line confirmed", CONFIRMED, vec![json!("typed while offline")]).await;
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
async fn a_page_that_falls_behind_fills_the_gap_from_history() {
    // A queue of two events per connection: a burst overflows the page's, and it gets `gap`.
    let mut config = common::quick_close();
    config.session.max_queue_items = 2;
    config.session.rate_limit = None;
    let server = common::server_with(config).await;
    let driver = Driver::start().await;
    let alice = Page::named(&driver, server.addr(), "alice").await;
    checked("gap", &[&alice], async {
        let mut carol = Client::named(&server.url(), "carol").await;
        // Bursts of 50: carol's own acks fit the reserve her queue keeps for answers.
        const BURST: u64 = 300;
        for i in 1..=BURST {
            carol.chat(&format!("burst {i}"), &format!("b{i}")).await;
            if i % 50 == 0 {
                carol.expect_where("ack", |e| e["client_id"] == format!("b{i}").as_str()).await;
            }
        }
        alice.wait_message("carol", &format!("burst {BURST}")).await;
        alice.wait_notice("You fell behind").await;
        let lines = alice.messages().await;
        let seqs: Vec<u64> = lines.as_array().unwrap().iter().filter_map(|m| m["seq"].as_u64()).collect();
        assert_eq!(seqs, (1..=BURST).collect::<Vec<_>>(), "every message once, in order");
        let (_, metrics) = common::http_get(server.addr(), "/metrics").await;
        let gaps =
            metrics.lines().find_map(|l| l.strip_prefix("chorus_gaps_total ")).and_then(|v| v.parse::<f64>().ok());
        assert!(gaps.is_some_and(|n| n > 0.0), "the server sent gap events: {gaps:?}");
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
        alice.wait_js("#rust on screen", IN_ROOM, vec![json!("rust")]).await;
        alice.type_line("said before the reload").await;
        alice.wait_js("the line confirmed", CONFIRMED, vec![json!("said before the reload")]).await;

        alice.client.refresh().await.unwrap();
        alice.wait_connected().await;
        alice.wait_name("alice").await;
        alice.wait_js("#rust again", IN_ROOM, vec![json!("rust")]).await;
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

/// The hex SHA-256 of `bytes`.
fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Offer `content` over the protocol and send it in chunks; the sender's ack.
async fn upload(client: &mut Client, name: &str, media_type: &str, content: &[u8]) -> serde_json::Value {
    client
        .send_json(json!({
            "type": "file_offer", "upload_id": "u1", "name": name, "size": content.len(),
            "media_type": media_type, "sha256": sha256(content), "client_id": "f1",
        }))
        .await;
    let ready = client.expect("upload_ready").await;
    let chunk = ready["chunk_size"].as_u64().unwrap() as usize;
    for (i, piece) in content.chunks(chunk).enumerate() {
        client.send_json(json!({"type": "file_chunk", "upload_id": "u1", "offset": i * chunk})).await;
        client.send_binary(piece).await;
    }
    client.expect_where("ack", |e| e["upload_id"] == "u1").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromium-driver (apt)"]
async fn a_file_from_the_terminal_client_downloads_in_the_browser_with_the_same_sha256() {
    let server = common::server().await;
    let driver = Driver::start().await;
    let alice = Page::open(&driver, server.addr(), "alice").await;
    checked("download", &[&alice], async {
        // Several chunks, and bytes that are not text, sent with `chorus client`'s /file.
        let content: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quarterly report.pdf");
        std::fs::write(&path, &content).unwrap();
        let mut terminal = tokio::process::Command::from(common::process::chorus());
        terminal.arg("client").arg(server.url()).arg("--downloads").arg(dir.path().join("carol"));
        terminal.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).kill_on_drop(true);
        let mut carol = terminal.spawn().unwrap();
        let mut stdin = carol.stdin.take().unwrap();
        let script = format!("/username carol\n/file {}\n", path.display());
        tokio::io::AsyncWriteExt::write_all(&mut stdin, script.as_bytes()).await.unwrap();
        drop(stdin); // end of input: the client quits once the upload is done
        let output = tokio::time::timeout(web::PAGE_WAIT, carol.wait_with_output()).await.unwrap().unwrap();
        let printed = String::from_utf8_lossy(&output.stdout);
        assert!(printed.contains("* sent quarterly report.pdf"), "the terminal client sent it: {printed}");

        let line = alice.wait_message("carol", "quarterly report.pdf293 KiB").await;
        assert_eq!(line["own"], false);
        let link = alice.client.find(fantoccini::Locator::Css("#messages .file a.file-name")).await.unwrap();
        link.click().await.unwrap();
        let deadline = tokio::time::Instant::now() + web::PAGE_WAIT;
        let saved = alice.downloads.path().join("quarterly report.pdf");
        while std::fs::metadata(&saved).map(|m| m.len()).unwrap_or(0) != content.len() as u64 {
            assert!(tokio::time::Instant::now() < deadline, "no download at {}", saved.display());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let downloaded = std::fs::read(&saved).unwrap();
        assert_eq!(sha256(&downloaded), sha256(&content), "the browser saved the very bytes sent");
    })
    .await;
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromium-driver (apt)"]
async fn chat_goes_out_while_a_file_uploads() {
    let server = common::server().await;
    let driver = Driver::start().await;
    let alice = Page::named(&driver, server.addr(), "alice").await;
    checked("upload", &[&alice], async {
        let mut carol = Client::named(&server.url(), "carol").await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backup.tar");
        let content: Vec<u8> = (0..20_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        let picker = alice.client.find(fantoccini::Locator::Id("file-input")).await.unwrap();
        picker.send_keys(&path.display().to_string()).await.unwrap();
        let started = "const bar = document.querySelector('#messages .upload progress');
                       return bar && bar.value > 0 && bar.value < bar.max";
        alice.wait_js("the upload under way, with progress", started, vec![]).await;
        alice.type_line("this line does not wait for the file").await;
        // Carol gets the line before the file, which was still on its way.
        let first = loop {
            let event = carol.next_event().await;
            if event["type"] == "chat" || event["type"] == "file" {
                break event;
            }
        };
        assert_eq!(first["text"], "this line does not wait for the file", "got {first}");
        let file = carol.expect("file").await;
        assert_eq!(file["sha256"], sha256(&content));
        let done = "const li = document.querySelector('#messages li.own .file')?.closest('li');
                    return li?.dataset.state === 'confirmed'";
        alice.wait_js("the upload confirmed, as a download link", done, vec![]).await;
    })
    .await;
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromium-driver (apt)"]
async fn an_upload_the_server_refuses_says_why() {
    let config = ServerConfig { files: FileLimits { max_file_size: 1000, max_total: None }, ..common::quick_close() };
    let server = common::server_with(config).await;
    let driver = Driver::start().await;
    let alice = Page::named(&driver, server.addr(), "alice").await;
    checked("refused", &[&alice], async {
        alice.js(web::DROP_FILE, vec![json!("drop"), json!("big.txt"), json!("x".repeat(5000))]).await;
        let failed = "const li = document.querySelector('#messages li.own');
                      return li?.dataset.state === 'failed' ? li.querySelector('.state').textContent : null";
        let why = alice.wait_js("the refusal on the line", failed, vec![]).await;
        assert!(why.as_str().unwrap().contains("file_too_large"), "the line says why: {why}");
        // The connection stays, and chat goes on.
        alice.type_line("still here").await;
        alice.wait_js("the next line confirmed", CONFIRMED, vec![json!("still here")]).await;
    })
    .await;
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromium-driver (apt)"]
async fn an_image_sent_from_one_browser_shows_inline_in_the_other() {
    let server = common::server().await;
    let driver = Driver::start().await;
    let alice = Page::named(&driver, server.addr(), "maya").await;
    let bob = Page::named(&driver, server.addr(), "leo").await;
    checked("image", &[&alice, &bob], async {
        // Leo was in #design before, and two messages came there since (the screenshot shows the count).
        bob.type_line("/join design").await;
        bob.type_line("Mockups for the landing page are up.").await;
        bob.wait_js("the line in #design confirmed", CONFIRMED, vec![json!("Mockups for the landing page are up.")])
            .await;
        bob.type_line("/join lobby").await;
        bob.wait_js("back in the lobby", IN_ROOM, vec![json!("lobby")]).await;
        let mut nora = Client::named(&format!("{}?room=design", server.url()), "nora").await;
        nora.chat("Looks great!", "n1").await;
        nora.chat("One note on the header spacing.", "n2").await;
        nora.expect_where("ack", |e| e["client_id"] == "n2").await;
        let mut sam = Client::named(&server.url(), "sam").await;
        bob.wait_people(&["leo", "maya", "sam"]).await;
        bob.wait_js("2 unread in #design", UNREAD, vec![json!("design"), json!("2")]).await;
        sam.chat("Is the harbour photo ready?", "s1").await;
        alice.wait_message("sam", "Is the harbour photo ready?").await;
        alice.type_line("Yes, here it is.").await;

        // A PNG drawn by the browser, saved to disk, then chosen with the file picker.
        let png = alice.draw_png().await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("harbour.png");
        std::fs::write(&path, &png).unwrap();
        let picker = alice.client.find(fantoccini::Locator::Id("file-input")).await.unwrap();
        picker.send_keys(&path.display().to_string()).await.unwrap();

        let file = sam.expect("file").await;
        assert_eq!((file["name"].as_str(), file["media_type"].as_str()), (Some("harbour.png"), Some("image/png")));
        assert_eq!(file["sha256"], sha256(&png), "the browser hashed the file it sent");
        let shown = "const img = document.querySelector('#messages figure.image img[alt=\"harbour.png\"]');
                     return img && img.complete && img.naturalWidth > 0 ? img.naturalWidth : null";
        assert_eq!(bob.wait_js("the image inline", shown, vec![]).await, 480);
        assert_eq!(alice.wait_js("the image on the sender's side too", shown, vec![]).await, 480);
        let upload = "return document.querySelector('#messages li.own figure.image')?.closest('li').dataset.state === 'confirmed'";
        alice.wait_js("the upload confirmed", upload, vec![]).await;

        // Drag and drop, and paste: a text file each, shown as download links.
        bob.js(web::DROP_FILE, vec![json!("drop"), json!("notes.txt"), json!("dropped text\n")]).await;
        bob.js(web::DROP_FILE, vec![json!("paste"), json!("pasted.txt"), json!("pasted text\n")]).await;
        alice.wait_message("leo", "notes.txt13 B").await;
        alice.wait_message("leo", "pasted.txt12 B").await;
        sam.chat("Lovely light. Printing it for the wall.", "s2").await;
        bob.wait_message("sam", "Lovely light. Printing it for the wall.").await;
        bob.js("document.getElementById('input').blur()", vec![]).await;
        bob.client.set_window_size(1280, 900).await.unwrap();
        bob.js("const s = document.getElementById('scroller'); s.scrollTop = s.scrollHeight", vec![]).await;
        let readme = screenshot_dir().join("web-client.png");
        bob.screenshot(&readme).await;
        if std::env::var_os("CHORUS_UPDATE_SCREENSHOT").is_some() {
            std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/docs")).unwrap();
            std::fs::copy(&readme, concat!(env!("CARGO_MANIFEST_DIR"), "/docs/web-client.png")).unwrap();
        }
    })
    .await;
    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromium-driver (apt)"]
async fn with_accounts_required_the_page_signs_in_and_keeps_the_token() {
    let data = tempfile::tempdir().unwrap();
    let secret = "a test secret, long enough for HS256 keys";
    let config = ServerConfig {
        data_dir: data.path().to_path_buf(),
        security: SecurityConfig {
            auth: AuthMode::Required,
            auth_secret: Some(secret.into()),
            api_rate_limit: None,
            ..Default::default()
        },
        ..common::quick_close()
    };
    let server = common::server_with(config).await;
    let driver = Driver::start().await;
    let alice = Page::launch(&driver, server.addr(), "alice").await;
    checked("accounts", &[&alice], async {
        // Guests are refused (401 at the handshake): the page asks to sign in, with no guest way out.
        let form = "const d = document.getElementById('auth-dialog');
                    return d.open && document.getElementById('auth-guest').hidden";
        alice.wait_js("the sign-in form", form, vec![]).await;
        let find = |id| alice.client.find(fantoccini::Locator::Id(id));
        find("auth-user").await.unwrap().send_keys("alice").await.unwrap();
        find("auth-password").await.unwrap().send_keys("correct horse battery").await.unwrap();
        find("auth-register").await.unwrap().click().await.unwrap();
        alice.wait_connected().await;
        alice.wait_name("alice").await;

        // The token is kept: a reload connects as alice at once.
        alice.client.refresh().await.unwrap();
        alice.wait_connected().await;
        alice.wait_name("alice").await;
        let signed_in = alice.js("return document.getElementById('auth-button').textContent", vec![]).await;
        assert_eq!(signed_in, "Sign out");

        // Files need the token too: the page adds it, so an image from dana shows.
        let token = chorus::server::auth::issue_token(data.path(), Some(secret), "dana", Duration::from_secs(60))
            .unwrap()
            .token;
        let mut dana = Client::connect(&format!("{}?token={token}", server.url())).await;
        let png = alice.draw_png().await;
        upload(&mut dana, "harbour.png", "image/png", &png).await;
        let shown = "const img = document.querySelector('#messages figure.image img');
                     return img && img.complete && img.naturalWidth > 0";
        alice.wait_js("dana's image", shown, vec![]).await;
    })
    .await;
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromium-driver (apt)"]
async fn over_https_the_page_speaks_wss_and_sends_files() {
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        data_dir: data.path().to_path_buf(),
        security: SecurityConfig { tls: Some(TlsSource::SelfSigned), ..Default::default() },
        ..common::quick_close()
    };
    let server = common::server_with(config).await;
    let driver = Driver::start().await;
    let alice = Page::launch_url(&driver, &format!("https://{}/", server.addr()), "alice").await;
    checked("https", &[&alice], async {
        alice.wait_connected().await;
        alice.type_line("over TLS").await;
        alice.wait_js("the line confirmed", CONFIRMED, vec![json!("over TLS")]).await;
        // An https page is a secure context: the browser hashes and sends files.
        alice.js(web::DROP_FILE, vec![json!("drop"), json!("tls.txt"), json!("sent over wss")]).await;
        let sent = "const li = document.querySelector('#messages li.own .file')?.closest('li');
                    return li?.dataset.state === 'confirmed'";
        alice.wait_js("the file sent", sent, vec![]).await;
    })
    .await;
    alice.close().await;
}
