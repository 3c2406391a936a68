//! `chorus client`: chat from a terminal.
//!
//! On a terminal, a line editor (rustyline) reads what you type on one thread
//! while incoming events are printed above the input line through its
//! `ExternalPrinter`, so nothing you are typing gets garbled. With stdin not a
//! terminal it reads one message per line and prints one event per line, so it
//! can be scripted; at the end of input it waits for the answers to what it
//! sent, then closes with 1000.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use super::connection::{ConnectOptions, Received, Sender, connect, split};
use super::display::Display;
use crate::protocol::{ClientFrame, ServerEvent};

/// How long, after the end of scripted input, to wait for outstanding answers.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What `chorus client` was asked to do.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub url: String,
    /// Print each event as its raw JSON instead of a readable line.
    pub json: bool,
    pub connect: ConnectOptions,
}

/// The help text for `/help`.
pub const HELP: &str = "\
commands:
  <text>              send a chat message to your room
  /username <name>    change your name (unique, 1-32 characters, no spaces)
  /join <room>        move to another room (created if needed)
  /who                who is in your room
  /rooms              rooms and their member counts
  /history [n]        the last n messages of your room
  /binary <text>      send <text> as a binary message
  //text              send a message that starts with /
  /help               this help
  /quit               leave (also ctrl-d)";

/// One line the user typed, understood.
#[derive(Debug, PartialEq, Eq)]
enum Command<'a> {
    Chat(&'a str),
    Frame(ClientFrame<'a>),
    Binary(&'a str),
    Help,
    Quit,
    Nothing,
    Unknown(&'a str),
    Usage(&'static str),
}

fn parse_command(line: &str) -> Command<'_> {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return Command::Nothing;
    }
    let Some(rest) = trimmed.strip_prefix('/') else { return Command::Chat(line) };
    if rest.starts_with('/') {
        return Command::Chat(&trimmed[1..]);
    }
    let (name, arg) = rest.split_once(char::is_whitespace).map_or((rest, ""), |(n, a)| (n, a.trim()));
    let frame = |f| Command::Frame(f);
    match (name, arg) {
        ("quit" | "exit" | "q", _) => Command::Quit,
        ("help" | "h" | "?", _) => Command::Help,
        ("username" | "name" | "nick", "") => Command::Usage("/username <name>"),
        ("username" | "name" | "nick", name) => frame(ClientFrame::Username { name: name.into() }),
        ("join", "") => Command::Usage("/join <room>"),
        ("join", room) => frame(ClientFrame::Join { room: room.trim_start_matches('#').into() }),
        ("who", _) => frame(ClientFrame::Who),
        ("rooms", _) => frame(ClientFrame::Rooms),
        ("history", "") => frame(ClientFrame::History { room: None, after_seq: None, before_seq: None, limit: None }),
        ("history", n) => match n.parse() {
            Ok(limit) => {
                frame(ClientFrame::History { room: None, after_seq: None, before_seq: None, limit: Some(limit) })
            }
            Err(_) => Command::Usage("/history [n]"),
        },
        ("binary", "") => Command::Usage("/binary <text>"),
        ("binary", _) => Command::Binary(rest["binary".len()..].trim_start()),
        (other, _) => Command::Unknown(other),
    }
}

/// Where output goes: above the line editor, or plain stdout.
enum Output {
    Editor(Box<dyn rustyline::ExternalPrinter + Send>),
    Plain,
}

impl Output {
    fn print(&mut self, line: String) {
        match self {
            Output::Editor(printer) => {
                if printer.print(format!("{line}\n")).is_err() {
                    println!("{line}");
                }
            }
            Output::Plain => println!("{line}"),
        }
    }
}

/// What the input side sends to the main loop.
enum Input {
    Line(String),
    End,
}

/// Run the client until the user quits or the server goes away.
pub async fn run(options: ClientOptions) -> anyhow::Result<()> {
    let ws = connect(&options.url, &options.connect).await?;
    let (mut sender, mut receiver) = split(ws);
    let on_terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let prompt = Arc::new(Mutex::new(String::from("> ")));
    let (input_tx, mut input_rx) = mpsc::channel::<Input>(64);
    let terminal = if on_terminal { Some(TerminalGuard::save()) } else { None };
    let mut output = if on_terminal {
        Output::Editor(spawn_editor(input_tx, prompt.clone())?)
    } else {
        spawn_stdin_reader(input_tx);
        Output::Plain
    };
    if on_terminal {
        output.print(format!("* connected to {}; type /help for the commands", options.url));
    }
    let mut display = Display::new(on_terminal && Display::color_for_stdout());
    display.show_acks = !on_terminal;
    let mut state = State { pending: 0, next_client_id: 1, input_done: false };
    let drain_deadline = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(drain_deadline);
    let outcome = loop {
        tokio::select! {
            input = input_rx.recv(), if !state.input_done => {
                let line = match input {
                    Some(Input::Line(line)) => line,
                    Some(Input::End) | None => {
                        state.input_done = true;
                        if state.pending == 0 { break Ok(()); }
                        drain_deadline.as_mut().reset(tokio::time::Instant::now() + DRAIN_TIMEOUT);
                        continue;
                    }
                };
                match handle_line(&line, &mut sender, &mut state, &mut output).await {
                    Ok(true) => {}
                    Ok(false) => break Ok(()),
                    Err(err) => break Err(err),
                }
            }
            received = receiver.recv() => {
                let received = match received {
                    None => break Err(anyhow::anyhow!("the connection to the server was lost")),
                    Some(Err(err)) => break Err(anyhow::anyhow!("the connection to the server failed: {err}")),
                    Some(Ok(received)) => received,
                };
                if let Received::Closed(frame) = &received {
                    let why = frame.as_ref().map(|f| format!("{}: {}", u16::from(f.code), f.reason)).unwrap_or_else(|| "no close code".into());
                    break Err(anyhow::anyhow!("the server closed the connection ({why})"));
                }
                show(&received, &mut display, &mut output, options.json, &mut state, &prompt);
                if state.input_done && state.pending == 0 { break Ok(()); }
            }
            () = &mut drain_deadline, if state.input_done => {
                output.print(format!("! no answer to {} request(s) within {DRAIN_TIMEOUT:?}", state.pending));
                break Ok(());
            }
        }
    };
    if outcome.is_ok() {
        let _ = sender.close().await;
        // Wait briefly for the server's close reply, so the close is clean.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(received)) = receiver.recv().await {
                if matches!(received, Received::Closed(_)) {
                    break;
                }
            }
        })
        .await;
    }
    drop(terminal);
    outcome
}

/// What the main loop tracks.
struct State {
    /// Requests sent whose direct answer (ack, who, error...) has not arrived.
    pending: usize,
    next_client_id: u64,
    input_done: bool,
}

/// Act on one typed line; `Ok(false)` means quit.
async fn handle_line(line: &str, sender: &mut Sender, state: &mut State, output: &mut Output) -> anyhow::Result<bool> {
    let sent = match parse_command(line) {
        Command::Quit => return Ok(false),
        Command::Nothing => return Ok(true),
        Command::Help => {
            output.print(HELP.to_string());
            return Ok(true);
        }
        Command::Usage(usage) => {
            output.print(format!("! usage: {usage}"));
            return Ok(true);
        }
        Command::Unknown(name) => {
            output.print(format!("! unknown command /{name}; /help lists the commands"));
            return Ok(true);
        }
        Command::Chat(text) => {
            let client_id = format!("c{}", state.next_client_id);
            state.next_client_id += 1;
            sender
                .send_frame(&ClientFrame::Chat { text: text.into(), room: None, client_id: Some(client_id.into()) })
                .await
        }
        Command::Frame(frame) => sender.send_frame(&frame).await,
        Command::Binary(text) => sender.send_binary(text.as_bytes().to_vec()).await,
    };
    sent.context("sending to the server failed")?;
    state.pending += 1;
    Ok(true)
}

/// Print one received item and account for answers.
fn show(
    received: &Received,
    display: &mut Display,
    output: &mut Output,
    json: bool,
    state: &mut State,
    prompt: &Mutex<String>,
) {
    let Received::Event { text, data } = received else {
        if let Received::Binary(data) = received {
            output.print(format!("* {} bytes of unannounced binary data", data.len()));
        }
        return;
    };
    let Some(event) = received.event() else {
        output.print(format!("? {}", text.as_str()));
        return;
    };
    let answers_me = match &event {
        ServerEvent::Ack { .. }
        | ServerEvent::Who { .. }
        | ServerEvent::Rooms { .. }
        | ServerEvent::History { .. }
        | ServerEvent::Error { .. } => true,
        ServerEvent::Renamed { user_id, .. } | ServerEvent::Joined { user_id, .. } => {
            display.me() == Some(user_id.as_ref())
        }
        _ => false,
    };
    if answers_me {
        state.pending = state.pending.saturating_sub(1);
    }
    update_prompt(&event, display, prompt);
    if json {
        output.print(text.to_string());
    } else if let Some(line) = display.line(&event, data.as_deref()) {
        output.print(line);
    }
}

/// Keep the prompt showing `#room name>`.
fn update_prompt(event: &ServerEvent<'_>, display: &Display, prompt: &Mutex<String>) {
    let mut prompt = prompt.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match event {
        ServerEvent::Welcome { username, room, .. } => *prompt = format!("#{room} {username}> "),
        ServerEvent::Renamed { user_id, new, room, .. } if display.me() == Some(user_id.as_ref()) => {
            *prompt = format!("#{room} {new}> ");
        }
        ServerEvent::Joined { user_id, username, room, .. } if display.me() == Some(user_id.as_ref()) => {
            *prompt = format!("#{room} {username}> ");
        }
        _ => {}
    }
}

/// Start the line editor on its own thread; returns the printer for output.
fn spawn_editor(
    input: mpsc::Sender<Input>,
    prompt: Arc<Mutex<String>>,
) -> anyhow::Result<Box<dyn rustyline::ExternalPrinter + Send>> {
    use rustyline::error::ReadlineError;
    let mut editor = rustyline::DefaultEditor::new().context("starting the line editor")?;
    let printer = editor.create_external_printer().context("starting the line editor")?;
    std::thread::spawn(move || {
        loop {
            let current = prompt.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
            match editor.readline(&current) {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = editor.add_history_entry(line.as_str());
                    }
                    if input.blocking_send(Input::Line(line)).is_err() {
                        break;
                    }
                }
                Err(ReadlineError::Interrupted | ReadlineError::Eof) | Err(_) => {
                    let _ = input.blocking_send(Input::End);
                    break;
                }
            }
        }
    });
    Ok(Box::new(printer))
}

/// Read stdin line by line (not a terminal).
fn spawn_stdin_reader(input: mpsc::Sender<Input>) {
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if input.send(Input::Line(line)).await.is_err() {
                return;
            }
        }
        let _ = input.send(Input::End).await;
    });
}

/// Puts the terminal back as it was if we leave while the editor is reading
/// (the server went away): the editor thread cannot be interrupted.
struct TerminalGuard {
    saved: Option<nix::sys::termios::Termios>,
}

impl TerminalGuard {
    fn save() -> Self {
        TerminalGuard { saved: nix::sys::termios::tcgetattr(std::io::stdin()).ok() }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, saved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_understood_locally() {
        assert_eq!(parse_command("hello"), Command::Chat("hello"));
        assert_eq!(parse_command("  "), Command::Nothing);
        assert_eq!(parse_command("/quit"), Command::Quit);
        assert_eq!(parse_command("/help"), Command::Help);
        assert_eq!(parse_command("//slash"), Command::Chat("/slash"));
        assert_eq!(parse_command("/binary  raw bytes"), Command::Binary("raw bytes"));
        assert_eq!(parse_command("/join #rust"), Command::Frame(ClientFrame::Join { room: "rust".into() }));
        assert_eq!(parse_command("/username"), Command::Usage("/username <name>"));
        assert_eq!(parse_command("/history ten"), Command::Usage("/history [n]"));
        assert_eq!(parse_command("/dance"), Command::Unknown("dance"));
    }
}
