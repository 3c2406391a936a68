//! `chorus run --dashboard` in headless Chromium: the page follows the run
//! second by second over its WebSocket (figures, charts, thresholds as they
//! stand) and shows the final report when the run ends.
//!
//! Needs Debian's `chromium` and `chromium-driver`: ignored by a plain
//! `cargo test`; `.ci/run` installs both and runs it. A failing test leaves
//! a screenshot in `target/browser-screenshots/`.
#![allow(clippy::unwrap_used)]

mod common;
mod web;

use std::time::Duration;

use serde_json::json;

use common::process::{announced, chorus_run};
use web::{Driver, Page, checked};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromium-driver (apt)"]
async fn the_dashboard_follows_the_run_and_ends_with_the_report() {
    let dir = tempfile::tempdir().unwrap();
    // The shipped chat room, its latency limits loosened: a debug build
    // beside a browser on two cores is no measure of speed.
    let lines = std::fs::canonicalize("scenarios/data/chat-lines.txt").unwrap();
    let scenario = std::fs::read_to_string("scenarios/chat-room.toml")
        .unwrap()
        .replace("data/chat-lines.txt", lines.to_str().unwrap())
        .replace("< 50ms", "< 10s")
        .replace("< 100ms", "< 10s")
        .replace("< 2s", "< 10s");
    let file = dir.path().join("chat-room.toml");
    std::fs::write(&file, scenario).unwrap();
    let out = dir.path().join("out");
    let args = ["--dashboard", "--duration", "8s", "--set", "ramp_up=1s", "--out", out.to_str().unwrap()];
    let mut run = chorus_run(std::iter::once(file.to_str().unwrap()).chain(args));
    let url = announced(&mut run, "dashboard: ").await;
    let driver = Driver::start().await;
    let page = Page::launch_url(&driver, &url, "dashboard").await;
    checked("dashboard", &[&page], async {
        page.wait_js(
            "the scenario's name",
            "return document.getElementById('title').textContent === 'chorus run: chat-room'",
            vec![],
        )
        .await;
        page.wait_js("a steady second", "return document.getElementById('state').textContent.startsWith('steady')", vec![])
            .await;
        let sent = page.wait_js("messages sent", "return Number(document.getElementById('t-sent').textContent.replace(/\\D/g, ''))", vec![]).await;
        assert!(sent.as_f64().unwrap() > 0.0);
        let connected = page.js("return document.getElementById('t-connected').textContent", vec![]).await;
        assert!(connected.as_str().unwrap().ends_with("/ 55"), "{connected}");
        page.wait_js(
            "charts drawn",
            "return document.querySelectorAll('#c-rate polyline').length === 2 && \
             document.querySelector('#c-rate polyline').getAttribute('points').split(' ').length > 2",
            vec![],
        )
        .await;
        let rows = page.js("return [...document.querySelectorAll('#thresholds tr')].map(r => r.cells[0].textContent)", vec![]).await;
        assert!(rows.as_array().unwrap().contains(&json!("checks.rate")), "{rows}");
        let pending = page.js(
            "return [...document.querySelectorAll('#thresholds tr')].find(r => r.cells[0].textContent === 'history.p99').cells[3].textContent",
            vec![],
        )
        .await;
        assert_eq!(pending, json!("no data yet"), "not followed live until the end");
        // The end: the final report, with the verdict.
        let long = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < long {
            let shown = page.js("return document.getElementById('final').classList.contains('shown')", vec![]).await;
            if shown == json!(true) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let report = page.js("return document.getElementById('report').textContent", vec![]).await;
        let report = report.as_str().unwrap();
        assert!(report.contains("chorus run: chat-room") && report.contains("result: PASSED"), "{report}");
        let state = page.js("return document.getElementById('state').textContent", vec![]).await;
        assert_eq!(state, json!("finished: PASSED"));
        let history = page.js(
            "return [...document.querySelectorAll('#thresholds tr')].find(r => r.cells[0].textContent === 'history.p99').cells[3].textContent",
            vec![],
        )
        .await;
        assert_eq!(history, json!("passing"), "the final thresholds replace the live ones");
    })
    .await;
    page.close().await;
    let status = tokio::time::timeout(Duration::from_secs(30), run.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0));
}
