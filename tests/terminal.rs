//! `chorus client` as a person uses it, on a real pseudo-terminal: the prompt
//! follows the name and room as soon as the server confirms them, ctrl-c
//! ends it in every state, and a server that is not chorus is one clear
//! error instead of a client waiting forever.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};

/// A `chorus client` on a pseudo-terminal, and what it printed so far.
struct OnTerminal {
    child: Child,
    master: std::fs::File,
    output: mpsc::Receiver<Vec<u8>>,
    /// Everything printed, escape sequences removed.
    screen: String,
}

impl OnTerminal {
    fn spawn(url: &str) -> OnTerminal {
        let size = nix::pty::Winsize { ws_row: 40, ws_col: 120, ws_xpixel: 0, ws_ypixel: 0 };
        let pty = nix::pty::openpty(Some(&size), None).unwrap();
        let slave = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
        let child = Command::new(env!("CARGO_BIN_EXE_chorus"))
            .args(["client", url])
            .env("NO_COLOR", "1")
            .env("TERM", "xterm")
            .stdin(slave(&pty.slave))
            .stdout(slave(&pty.slave))
            .stderr(slave(&pty.slave))
            .spawn()
            .unwrap();
        drop(pty.slave);
        let master = std::fs::File::from(pty.master);
        let mut reader = master.try_clone().unwrap();
        let (tx, output) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        OnTerminal { child, master, output, screen: String::new() }
    }

    /// Read until `wanted` has been printed (answering cursor position
    /// queries as a terminal would); false if it never is.
    fn wait_for(&mut self, wanted: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.screen.contains(wanted) {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else { return false };
            let Ok(bytes) = self.output.recv_timeout(left) else { return false };
            let text = String::from_utf8_lossy(&bytes).into_owned();
            for _ in 0..text.matches("\x1b[6n").count() {
                self.master.write_all(b"\x1b[1;1R").unwrap();
            }
            self.screen.push_str(&strip_escapes(&text));
        }
        true
    }

    fn type_keys(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
    }

    /// The exit status, waiting for it; `None` if it does not exit.
    fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            // Keep draining the output so the client never blocks on a full terminal.
            while let Ok(bytes) = self.output.try_recv() {
                self.screen.push_str(&strip_escapes(&String::from_utf8_lossy(&bytes)));
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for OnTerminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Text without CSI and OSC escape sequences (what a reader of the screen sees, roughly).
fn strip_escapes(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => while chars.next().is_some_and(|c| !c.is_ascii_alphabetic() && c != '~') {},
            Some(']') => while chars.next().is_some_and(|c| c != '\x07') {},
            _ => {}
        }
    }
    out
}

/// A plain WebSocket echo server (no chorus `welcome`).
async fn echo_server() -> String {
    common::ws_server(|mut ws| async move {
        while let Some(Ok(message)) = ws.next().await {
            if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                break;
            }
        }
    })
    .await
}

#[tokio::test]
async fn the_prompt_follows_the_name_and_room_at_once_and_ctrl_c_quits() {
    let server = common::server().await;
    let url = server.url();
    let code = tokio::task::spawn_blocking(move || {
        let mut client = OnTerminal::spawn(&url);
        assert!(client.wait_for("in #lobby (protocol 1)"), "no welcome:\n{}", client.screen);
        assert!(client.wait_for("#lobby guest-"), "the first prompt names the room and you:\n{}", client.screen);
        client.type_keys("/username alice\r");
        assert!(client.wait_for("you are now alice"), "{}", client.screen);
        assert!(client.wait_for("#lobby alice> "), "the prompt changed without another Enter:\n{}", client.screen);
        client.type_keys("/join rust\r");
        assert!(client.wait_for("#rust alice> "), "{}", client.screen);
        client.type_keys("\x03");
        client.exit_code()
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "ctrl-c ends the client");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn ctrl_c_and_ctrl_d_quit_while_waiting_for_a_welcome() {
    let url = echo_server().await;
    for key in ["\x03", "\x04"] {
        let url = url.clone();
        let code = tokio::task::spawn_blocking(move || {
            let mut client = OnTerminal::spawn(&url);
            // The editor is up (it asked where the cursor is, or drew a prompt).
            assert!(client.wait_for("connecting>"), "{}", client.screen);
            client.type_keys(key);
            client.exit_code()
        })
        .await
        .unwrap();
        assert_eq!(code, Some(0), "{key:?} ends a client still waiting for the server");
    }
}

#[tokio::test]
async fn a_server_that_is_not_chorus_is_one_clear_error_after_5_seconds() {
    let url = echo_server().await;
    for (command, input) in [("client", "hello\n"), ("client", ""), ("simple-client", "")] {
        let target = url.clone();
        let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
            let mut child = Command::new(env!("CARGO_BIN_EXE_chorus"))
                .args([command, &target])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            (output.status.code(), text(&output.stdout), text(&output.stderr))
        })
        .await
        .unwrap();
        assert_eq!(code, Some(1), "{command}, input {input:?}: stdout {stdout}\nstderr {stderr}");
        assert_eq!(stderr.trim(), format!("chorus: no chorus welcome from {url}: is this a chorus server?"));
        if command == "client" {
            assert!(!stdout.contains("connected"), "not connected to a chat: {stdout}");
        }
    }
}
