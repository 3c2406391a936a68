//! `chorus simple-client`: a scripted, non-interactive tour of the protocol.
//! Connects, sends a text, a binary and a rename (not when signed in with a
//! token: the name is then the account's), prints everything that comes back,
//! closes with 1000 and exits 0 (non-zero if any step fails).

use std::time::Duration;

use anyhow::{Context as _, bail};
use rand::Rng;

use super::connection::{ConnectOptions, Received, Receiver, connect, split};
use super::display::Display;
use crate::printable::printable;
use crate::protocol::{ClientFrame, ServerEvent};

/// How long to wait for each answer.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn run(url: &str, options: &ConnectOptions) -> anyhow::Result<()> {
    let ws = connect(url, options).await?;
    println!("connected to {}", super::connection::normalize_url(url));
    let (mut sender, mut receiver) = split(ws);
    let mut display = Display::new(Display::color_for_stdout());
    display.show_acks = true;

    match wait_for(&mut receiver, &mut display, "welcome", |_| true).await {
        Ok(true) => {}
        Ok(false) => return Err(super::interactive::no_welcome(url)),
        Err(err) if err.is::<NoAnswer>() => return Err(super::interactive::no_welcome(url)),
        Err(err) => return Err(err),
    }

    let text = "Hello from chorus simple-client!";
    println!("> chat {text:?}");
    let chat = ClientFrame::Chat { text: text.into(), room: None, client_id: Some("simple-1".into()) };
    sender.send_frame(&chat).await.context("sending the text")?;
    wait_for(&mut receiver, &mut display, "ack of the text", |e| matches!(e, ServerEvent::Ack { .. })).await?;

    let payload: Vec<u8> = b"\x00\x01\x02binary from simple-client\xff".to_vec();
    println!("> binary, {} bytes", payload.len());
    sender.send_binary(payload).await.context("sending the binary message")?;
    wait_for(&mut receiver, &mut display, "ack of the binary", |e| matches!(e, ServerEvent::Ack { .. })).await?;

    if options.token.is_some() {
        // Signed in: the username is the account name and cannot change.
        println!("> no rename: signed in, the username is the account name");
    } else {
        let name = format!("simple-{:04x}", rand::rng().random::<u16>());
        println!("> username {name}");
        sender.send_frame(&ClientFrame::Username { name: name.as_str().into() }).await.context("sending the rename")?;
        let me = display.me().map(str::to_owned);
        wait_for(&mut receiver, &mut display, "rename confirmation", |e| match e {
            ServerEvent::Renamed { user_id, .. } => me.as_deref() == Some(user_id.as_ref()),
            ServerEvent::Error { .. } => true,
            _ => false,
        })
        .await?;
    }

    println!("> close 1000");
    sender.close().await.context("sending the close frame")?;
    let closed = tokio::time::timeout(STEP_TIMEOUT, async {
        while let Some(Ok(received)) = receiver.recv().await {
            if let Received::Closed(frame) = received {
                return frame;
            }
        }
        None
    })
    .await;
    match closed {
        Ok(Some(frame)) => println!("closed cleanly ({} {})", u16::from(frame.code), frame.reason),
        Ok(None) => println!("closed"),
        Err(_) => bail!("the server did not answer the close within {STEP_TIMEOUT:?}"),
    }
    Ok(())
}

/// No answer came within `STEP_TIMEOUT`.
#[derive(Debug, thiserror::Error)]
#[error("no {0} within {STEP_TIMEOUT:?}")]
struct NoAnswer(String);

/// Print what arrives until an event matches `done`; fail after a timeout or
/// on an `error` event. The result says whether the first event was a `welcome`.
async fn wait_for(
    receiver: &mut Receiver,
    display: &mut Display,
    what: &str,
    mut done: impl FnMut(&ServerEvent<'_>) -> bool,
) -> anyhow::Result<bool> {
    let step = async {
        loop {
            let received = match receiver.recv().await {
                None => bail!("the connection closed while waiting for the {what}"),
                Some(Err(err)) => bail!("the connection failed while waiting for the {what}: {err}"),
                Some(Ok(received)) => received,
            };
            let Some(event) = received.event() else {
                if let Received::Closed(frame) = &received {
                    let why =
                        frame.as_ref().map_or_else(String::new, |f| format!(" ({} {})", u16::from(f.code), f.reason));
                    bail!("the server closed the connection while waiting for the {what}{}", printable(&why));
                }
                continue;
            };
            let data = match &received {
                Received::Event { data, .. } => data.as_deref(),
                _ => None,
            };
            if let Some(line) = display.line(&event, data) {
                println!("{line}");
            }
            if done(&event) {
                if let ServerEvent::Error { code, message, .. } = &event {
                    bail!("the server refused the {what}: {}: {}", printable(code), printable(message));
                }
                return Ok(matches!(event, ServerEvent::Welcome { .. }));
            }
        }
    };
    match tokio::time::timeout(STEP_TIMEOUT, step).await {
        Ok(result) => result,
        Err(_) => Err(NoAnswer(what.to_string()).into()),
    }
}
