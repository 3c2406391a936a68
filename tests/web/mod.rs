//! Driving the web client in a real browser: Debian's `chromium`, headless,
//! through `chromedriver` (WebDriver) with fantoccini. A `Driver` is one
//! chromedriver process on a free port; each `Page` is a browser session of
//! its own (a fresh profile, so its own `localStorage`). Everything started
//! here is stopped when dropped: sessions are closed, and the chromedriver
//! process group (chromedriver and the browsers it started) is killed.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, Locator};
use futures::FutureExt;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::process::{Child, Command};

/// How long a page has to show what a test waits for.
pub const PAGE_WAIT: Duration = Duration::from_secs(15);

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// Where failing tests leave screenshots, and where the README's is made.
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("browser-screenshots")
}

/// One chromedriver process.
pub struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    pub async fn start() -> Driver {
        for path in [CHROMEDRIVER, CHROMIUM] {
            assert!(Path::new(path).exists(), "{path} is missing: apt-get install chromium chromium-driver");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "chromedriver did not listen on port {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Driver { child, url: format!("http://127.0.0.1:{port}") }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // chromedriver and every browser it started share its process group.
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
        }
    }
}

/// One browser session showing the web client.
pub struct Page {
    pub client: Client,
    pub label: String,
    profile: TempDir,
    pub downloads: TempDir,
}

impl Page {
    /// A new browser on `http://<addr>/`, connected (its status says so).
    pub async fn open(driver: &Driver, addr: std::net::SocketAddr, label: &str) -> Page {
        let page = Page::launch(driver, addr, label).await;
        page.wait_connected().await;
        page
    }

    /// A new browser on `http://<addr>/`, whatever the page then shows.
    pub async fn launch(driver: &Driver, addr: std::net::SocketAddr, label: &str) -> Page {
        Page::launch_url(driver, &format!("http://{addr}/"), label).await
    }

    /// A new browser on `url` (self-signed certificates accepted).
    pub async fn launch_url(driver: &Driver, url: &str, label: &str) -> Page {
        let profile = tempfile::tempdir().unwrap();
        let downloads = tempfile::tempdir().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("acceptInsecureCerts".into(), json!(true));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,800",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
                "prefs": {
                    "download.default_directory": downloads.path(),
                    "download.prompt_for_download": false,
                },
            }),
        );
        // chromedriver now and then resets the connection of a session
        // request (seen once in CI, right as a test began): try again.
        let mut attempt = 1;
        let client = loop {
            match Client::with_capabilities_and_connector(&driver.url, &caps, HttpConnector::new()).await {
                Ok(client) => break client,
                Err(err) if attempt < 3 => {
                    eprintln!("{label}: no chromium session on attempt {attempt} ({err}); trying again");
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(err) => panic!("a chromium session, 3 attempts: {err:?}"),
            }
        };
        let page = Page { client, label: label.to_string(), profile, downloads };
        page.client.goto(url).await.unwrap();
        page
    }

    /// A new browser, connected, that took the name `name`.
    pub async fn named(driver: &Driver, addr: std::net::SocketAddr, name: &str) -> Page {
        let page = Page::open(driver, addr, name).await;
        page.rename(name).await;
        page
    }

    /// Change the name the way a person would: the name button, the dialog, Enter.
    pub async fn rename_in_dialog(&self, name: &str) {
        self.client.find(Locator::Id("name-button")).await.unwrap().click().await.unwrap();
        let field = self.client.find(Locator::Id("name-input")).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(&format!("{name}\u{E007}")).await.unwrap();
    }

    /// Close the browser.
    pub async fn close(self) {
        let _ = self.client.close().await;
    }

    /// Run `script` (a function body; `arguments[i]` are `args`) in the page.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client.execute(script, args).await.unwrap_or_else(|e| panic!("{}: script failed: {e}", self.label))
    }

    /// Wait until `script` returns something truthy; returns it.
    pub async fn wait_js(&self, what: &str, script: &str, args: Vec<Value>) -> Value {
        let deadline = tokio::time::Instant::now() + PAGE_WAIT;
        loop {
            let value = self.js(script, args.clone()).await;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                Value::Array(a) => !a.is_empty(),
                Value::Object(_) => true,
            };
            if truthy {
                return value;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("{}: timed out waiting for {what}; messages: {:#}", self.label, self.messages().await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_connected(&self) {
        self.wait_js(
            "the connection",
            "return document.getElementById('status').dataset.state === 'connected'",
            vec![],
        )
        .await;
    }

    /// Type a line in the composer and press Enter, as a person would.
    pub async fn type_line(&self, text: &str) {
        let input = self.client.find(Locator::Id("input")).await.unwrap();
        input.click().await.unwrap();
        input.send_keys(&format!("{text}\u{E007}")).await.unwrap();
    }

    /// Take a name with `/username` and wait until the header shows it.
    pub async fn rename(&self, name: &str) {
        self.type_line(&format!("/username {name}")).await;
        self.wait_name(name).await;
    }

    pub async fn wait_name(&self, name: &str) {
        self.wait_js(
            &format!("the name {name}"),
            "return document.getElementById('me-name').textContent === arguments[0]",
            vec![json!(name)],
        )
        .await;
    }

    /// Every line of the message list: `{kind, from, text, state, seq, own}`.
    pub async fn messages(&self) -> Value {
        self.client
            .execute(
                "return Array.from(document.querySelectorAll('#messages > li')).map(li => ({
                    kind: li.classList.contains('msg') ? 'msg' : 'notice',
                    from: li.dataset.from || null,
                    text: li.classList.contains('msg') ? li.querySelector('.body').textContent : li.textContent,
                    state: li.dataset.state || null,
                    seq: li.dataset.seq ? Number(li.dataset.seq) : null,
                    own: li.classList.contains('own'),
                }))",
                vec![],
            )
            .await
            .unwrap_or(Value::Null)
    }

    /// Wait for a message from `from` whose text is `text`; returns its line.
    pub async fn wait_message(&self, from: &str, text: &str) -> Value {
        self.wait_js(
            &format!("{from}: {text}"),
            "return Array.from(document.querySelectorAll('#messages li.msg')).map(li => ({
                from: li.dataset.from, text: li.querySelector('.body').textContent,
                state: li.dataset.state || null, seq: li.dataset.seq ? Number(li.dataset.seq) : null,
                own: li.classList.contains('own') }))
              .find(m => m.from === arguments[0] && m.text === arguments[1]) || null",
            vec![json!(from), json!(text)],
        )
        .await
    }

    /// Wait for a quiet notice containing `text`.
    pub async fn wait_notice(&self, text: &str) -> String {
        let found = self
            .wait_js(
                &format!("a notice with {text:?}"),
                "return Array.from(document.querySelectorAll('#messages li.notice'))
                   .map(li => li.textContent).find(t => t.includes(arguments[0])) || null",
                vec![json!(text)],
            )
            .await;
        found.as_str().unwrap().to_string()
    }

    /// The names in the presence panel.
    pub async fn people(&self) -> Vec<String> {
        let value = self
            .js(
                "return Array.from(document.querySelectorAll('#people li')).map(li => li.firstChild.textContent)",
                vec![],
            )
            .await;
        serde_json::from_value(value).unwrap()
    }

    pub async fn wait_people(&self, names: &[&str]) {
        let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        want.sort();
        let deadline = tokio::time::Instant::now() + PAGE_WAIT;
        loop {
            let mut have = self.people().await;
            have.sort();
            if have == want {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{}: people {have:?}, wanted {want:?}", self.label);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A 480x300 PNG picture, drawn by the browser.
    pub async fn draw_png(&self) -> Vec<u8> {
        let png = self.js(DRAW_PNG, vec![]).await;
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, png.as_str().unwrap()).unwrap()
    }

    pub async fn screenshot(&self, path: &Path) {
        if let Ok(png) = self.client.screenshot().await {
            let _ = std::fs::create_dir_all(path.parent().unwrap());
            let _ = std::fs::write(path, png);
        }
    }
}

/// Run a test's body; if it fails, save a screenshot of every page into
/// `target/browser-screenshots/<test>-<page>.png` before failing.
pub async fn checked(test: &str, pages: &[&Page], body: impl Future<Output = ()>) {
    if let Err(panic) = AssertUnwindSafe(body).catch_unwind().await {
        let dir = screenshot_dir();
        for page in pages {
            let path = dir.join(format!("{test}-{}.png", page.label));
            page.screenshot(&path).await;
            eprintln!("screenshot of {}: {}", page.label, path.display());
        }
        std::panic::resume_unwind(panic);
    }
}

/// A script that draws a 480x300 picture and returns it as base64 PNG.
const DRAW_PNG: &str = "
    const c = document.createElement('canvas');
    c.width = 480; c.height = 300;
    const g = c.getContext('2d');
    const sky = g.createLinearGradient(0, 0, 0, 300);
    sky.addColorStop(0, '#f6c28b'); sky.addColorStop(0.55, '#e98a6b'); sky.addColorStop(1, '#5b6fa8');
    g.fillStyle = sky; g.fillRect(0, 0, 480, 300);
    g.fillStyle = '#fff3d6'; g.beginPath(); g.arc(340, 170, 38, 0, Math.PI * 2); g.fill();
    g.fillStyle = '#34406b'; g.fillRect(0, 200, 480, 100);
    g.fillStyle = '#1f2747';
    g.beginPath(); g.moveTo(60, 230); g.lineTo(180, 230); g.lineTo(165, 250); g.lineTo(75, 250); g.fill();
    g.fillRect(118, 150, 4, 80);
    g.beginPath(); g.moveTo(122, 155); g.lineTo(170, 222); g.lineTo(122, 222); g.fill();
    g.strokeStyle = 'rgba(255,243,214,.5)'; g.lineWidth = 2;
    for (let y = 215; y < 300; y += 14) { g.beginPath(); g.moveTo(300, y); g.lineTo(380, y); g.stroke(); }
    return c.toDataURL('image/png').split(',')[1];";

/// A script that hands the page a file as a user would by dropping it on
/// the messages (`arguments[0]` = \"drop\") or pasting it into the message
/// box (\"paste\"): `arguments[1]` is its name, `arguments[2]` its text.
pub const DROP_FILE: &str = "
    const [how, name, text] = arguments;
    const data = new DataTransfer();
    data.items.add(new File([text], name, { type: 'text/plain' }));
    if (how === 'drop') {
      const chat = document.getElementById('chat');
      chat.dispatchEvent(new DragEvent('dragenter', { dataTransfer: data, bubbles: true }));
      chat.dispatchEvent(new DragEvent('drop', { dataTransfer: data, bubbles: true, cancelable: true }));
    } else {
      document.getElementById('input').dispatchEvent(new ClipboardEvent('paste', { clipboardData: data, bubbles: true, cancelable: true }));
    }";
