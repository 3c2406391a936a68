//! `chorus client`: chat from a terminal.
//!
//! On a terminal, a line editor (rustyline) reads what you type on one thread
//! while incoming events are printed above the input line through its
//! `ExternalPrinter`, so nothing you are typing gets garbled. With stdin not a
//! terminal it reads one message per line and prints one event per line, so it
//! can be scripted; at the end of input it waits for the answers to what it
//! sent, then closes with 1000.
//!
//! When the connection is lost it reconnects with jittered exponential
//! backoff (lines typed meanwhile are sent once back), restores its name and
//! room, shows what was said while it was away and marks where it resumed;
//! a `gap` from the server is fetched and shown the same way
//! (`conversation` decides what to send and show, `recovery` tracks seqs).

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use super::connection::{ConnectError, ConnectOptions, Received, Receiver, Sender, WsStream, connect, split};
use super::conversation::{Conversation, Effect};
use super::display::Display;
use super::reconnect::Backoff;
use crate::protocol::ClientFrame;

/// How long, after the end of scripted input, to wait for outstanding answers.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Most requests in flight: past this, typed (or piped) lines wait for
/// answers, so a fast script never has the server queue more answers for
/// it than it reads.
const MAX_IN_FLIGHT: usize = 256;
/// How long a client whose input has ended (a script) keeps trying to
/// reconnect to send what it still holds, before it exits with an error.
const SCRIPT_PATIENCE: Duration = Duration::from_secs(60);

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
            Ok(limit) if (1..=crate::protocol::HISTORY_MAX_LIMIT).contains(&limit) => {
                frame(ClientFrame::History { room: None, after_seq: None, before_seq: None, limit: Some(limit) })
            }
            _ => Command::Usage("/history [n] (n from 1 to 500)"),
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

/// What ended one connection.
enum Ended {
    /// The user quit, or scripted input is done and answered.
    Done(anyhow::Result<()>),
    /// The connection was lost (or closed by the server): reconnect.
    Lost(String),
}

/// Where the loops print, and what the user types.
struct Terminal {
    output: Output,
    input: mpsc::Receiver<Input>,
    prompt: Arc<Mutex<String>>,
    /// `--json`: client notices go to stderr, stdout stays JSON.
    json: bool,
    /// Lines typed while disconnected, sent once back.
    backlog: VecDeque<String>,
    input_done: bool,
}

impl Terminal {
    fn apply_prints(&mut self, effects: &mut Vec<Effect>) {
        effects.retain(|effect| match effect {
            Effect::Print(line) => {
                self.output.print(line.clone());
                false
            }
            Effect::Notice(line) => {
                if self.json {
                    eprintln!("{line}");
                } else {
                    self.output.print(line.clone());
                }
                false
            }
            Effect::Prompt(prompt) => {
                *self.prompt.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = prompt.clone();
                false
            }
            _ => true,
        });
    }

    fn notice(&mut self, line: String) {
        self.apply_prints(&mut vec![Effect::Notice(line)]);
    }
}

/// Run the client until the user quits; reconnects when the connection is lost.
pub async fn run(options: ClientOptions) -> anyhow::Result<()> {
    let mut ws = connect(&options.url, &options.connect).await?;
    let on_terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let prompt = Arc::new(Mutex::new(String::from("> ")));
    let (input_tx, input) = mpsc::channel::<Input>(64);
    let guard = if on_terminal { Some(TerminalGuard::save()) } else { None };
    let output = if on_terminal {
        Output::Editor(spawn_editor(input_tx, prompt.clone())?)
    } else {
        spawn_stdin_reader(input_tx);
        Output::Plain
    };
    let mut terminal =
        Terminal { output, input, prompt, json: options.json, backlog: VecDeque::new(), input_done: false };
    if on_terminal {
        terminal.notice(format!("* connected to {}; type /help for the commands", options.url));
    }
    let mut display = Display::new(on_terminal && Display::color_for_stdout());
    display.show_acks = !on_terminal;
    let mut conversation = Conversation::new(display, options.json);
    let outcome = loop {
        match converse(ws, &mut conversation, &mut terminal).await {
            Ended::Done(result) => break result,
            Ended::Lost(why) => {
                let mut effects = conversation.disconnected();
                terminal.apply_prints(&mut effects);
                if terminal.input_done && terminal.backlog.is_empty() {
                    break Err(anyhow::anyhow!("the connection to the server was lost ({why})"));
                }
                terminal.notice(format!("! connection lost ({why}); reconnecting"));
                match reconnect(&options, &mut terminal).await {
                    Ok(Some(new)) => ws = new,
                    Ok(None) => break Ok(()),
                    Err(err) => break Err(err),
                }
                conversation.reconnected();
            }
        }
    };
    drop(guard);
    outcome
}

/// Try to connect again, with jittered exponential backoff, until it works
/// or the user quits (`None`). Lines typed meanwhile are kept for later. Once
/// the input has ended (a script), it gives up after `SCRIPT_PATIENCE`.
async fn reconnect(options: &ClientOptions, terminal: &mut Terminal) -> anyhow::Result<Option<WsStream>> {
    let mut backoff = Backoff::default();
    let started = tokio::time::Instant::now();
    loop {
        if terminal.input_done && started.elapsed() >= SCRIPT_PATIENCE {
            anyhow::bail!(
                "gave up reconnecting to {} after {}s; {} line(s) of input were not sent",
                options.url,
                SCRIPT_PATIENCE.as_secs(),
                terminal.backlog.len()
            );
        }
        let delay = backoff.next_delay();
        let wake = tokio::time::Instant::now() + delay;
        while tokio::time::Instant::now() < wake {
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                input = terminal.input.recv(), if !terminal.input_done => match input {
                    Some(Input::Line(line)) if parse_command(&line) == Command::Quit => return Ok(None),
                    Some(Input::Line(line)) => {
                        if matches!(parse_command(&line), Command::Chat(_) | Command::Binary(_) | Command::Frame(_)) {
                            terminal.notice("! not connected: it will be sent once reconnected".to_string());
                            terminal.backlog.push_back(line);
                        }
                    }
                    Some(Input::End) | None => {
                        terminal.input_done = true;
                        if terminal.backlog.is_empty() {
                            return Ok(None);
                        }
                    }
                },
            }
        }
        match connect(&options.url, &options.connect).await {
            Ok(ws) => {
                terminal.notice(format!("* reconnected to {} (attempt {})", options.url, backoff.attempts()));
                return Ok(Some(ws));
            }
            Err(err) => {
                let why = match &err {
                    ConnectError::Unreachable { source, .. } => source.to_string(),
                    other => other.to_string(),
                };
                terminal.notice(format!("! reconnect attempt {} failed: {why}", backoff.attempts()));
            }
        }
    }
}

/// One connection, until it ends.
async fn converse(ws: WsStream, conversation: &mut Conversation, terminal: &mut Terminal) -> Ended {
    let (mut sender, mut receiver) = split(ws);
    let drain_deadline = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(drain_deadline);
    let mut draining = false;
    loop {
        let ready = conversation.welcomed() && conversation.pending() < MAX_IN_FLIGHT;
        let mut effects = tokio::select! {
            input = terminal.input.recv(), if ready && terminal.backlog.is_empty() && !terminal.input_done => match input {
                Some(Input::Line(line)) => match handle_line(&line, conversation, terminal) {
                    Some(effects) => effects,
                    None => return close(sender, receiver).await,
                },
                Some(Input::End) | None => {
                    terminal.input_done = true;
                    Vec::new()
                }
            },
            () = std::future::ready(()), if ready && !terminal.backlog.is_empty() => {
                let line = terminal.backlog.pop_front().unwrap_or_default();
                handle_line(&line, conversation, terminal).unwrap_or_default()
            }
            received = receiver.recv() => match received {
                None => return Ended::Lost("the connection dropped".to_string()),
                Some(Err(err)) => return Ended::Lost(err.to_string()),
                Some(Ok(Received::Closed(frame))) => {
                    let why = frame.map_or_else(|| "closed without a code".to_string(), |f| format!("{} {}", u16::from(f.code), f.reason));
                    return Ended::Lost(why);
                }
                Some(Ok(received)) => conversation.on_received(received),
            },
            () = &mut drain_deadline, if draining => {
                terminal.notice(format!("! no answer to {} request(s) within {DRAIN_TIMEOUT:?}", conversation.pending()));
                return close(sender, receiver).await;
            }
        };
        terminal.apply_prints(&mut effects);
        for effect in effects {
            let sent = match effect {
                Effect::Send(frame) => sender.send_frame(&frame).await,
                Effect::SendBinary(data) => sender.send_binary(data).await,
                _ => Ok(()),
            };
            if let Err(err) = sent {
                return Ended::Lost(format!("sending failed: {err}"));
            }
        }
        if terminal.input_done && terminal.backlog.is_empty() && conversation.welcomed() {
            if conversation.pending() == 0 {
                return close(sender, receiver).await;
            }
            if !draining {
                draining = true;
                drain_deadline.as_mut().reset(tokio::time::Instant::now() + DRAIN_TIMEOUT);
            }
        }
    }
}

/// Close with 1000 and wait briefly for the server's reply, so the close is clean.
async fn close(mut sender: Sender, mut receiver: Receiver) -> Ended {
    let _ = sender.close().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(received)) = receiver.recv().await {
            if matches!(received, Received::Closed(_)) {
                break;
            }
        }
    })
    .await;
    Ended::Done(Ok(()))
}

/// Act on one typed line: the effects to carry out, or `None` to quit.
fn handle_line(line: &str, conversation: &mut Conversation, terminal: &mut Terminal) -> Option<Vec<Effect>> {
    let effect = match parse_command(line) {
        Command::Quit => return None,
        Command::Nothing => return Some(Vec::new()),
        Command::Help => Effect::Notice(HELP.to_string()),
        Command::Usage(usage) => Effect::Notice(format!("! usage: {usage}")),
        Command::Unknown(name) => Effect::Notice(format!("! unknown command /{name}; /help lists the commands")),
        Command::Chat(text) => conversation.chat(text),
        Command::Frame(frame) => conversation.request(into_owned(frame)),
        Command::Binary(text) => conversation.binary(text.as_bytes().to_vec()),
    };
    let mut effects = vec![effect];
    terminal.apply_prints(&mut effects);
    Some(effects)
}

/// A typed request, detached from the line it was parsed from.
fn into_owned(frame: ClientFrame<'_>) -> ClientFrame<'static> {
    let own = |text: std::borrow::Cow<'_, str>| std::borrow::Cow::Owned(text.into_owned());
    match frame {
        ClientFrame::Chat { text, room, client_id } => {
            ClientFrame::Chat { text: own(text), room: room.map(own), client_id: client_id.map(own) }
        }
        ClientFrame::Username { name } => ClientFrame::Username { name: own(name) },
        ClientFrame::Join { room } => ClientFrame::Join { room: own(room) },
        ClientFrame::Who => ClientFrame::Who,
        ClientFrame::Rooms => ClientFrame::Rooms,
        ClientFrame::History { room, after_seq, before_seq, limit } => {
            ClientFrame::History { room: room.map(own), after_seq, before_seq, limit }
        }
        ClientFrame::FileOffer(offer) => ClientFrame::FileOffer(offer.into_owned()),
        ClientFrame::FileChunk { upload_id, offset } => ClientFrame::FileChunk { upload_id: own(upload_id), offset },
        ClientFrame::FileCancel { upload_id } => ClientFrame::FileCancel { upload_id: own(upload_id) },
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
        assert_eq!(parse_command("/history ten"), Command::Usage("/history [n] (n from 1 to 500)"));
        assert_eq!(parse_command("/history 501"), Command::Usage("/history [n] (n from 1 to 500)"));
        assert_eq!(parse_command("/dance"), Command::Unknown("dance"));
    }
}
