//! `chorus client`: chat from a terminal.
//!
//! On a terminal, a line editor (reedline) reads what you type on one thread
//! while incoming events are printed above the input line through its
//! `ExternalPrinter`; the prompt (`#room name> `) is redrawn with each printed
//! line, so it changes as soon as `welcome`, `renamed` or `joined` is shown.
//! With stdin not a terminal it reads one message per line and prints one
//! event per line, so it can be scripted; at the end of input it waits for the
//! answers to what it sent, then closes with 1000.
//!
//! `/quit`, ctrl-c and ctrl-d end it at once in every state: connecting,
//! waiting for `welcome`, chatting or reconnecting. A server that does not
//! greet with a chorus `welcome` within 5 s (a plain WebSocket echo server,
//! say) ends it with an error instead of leaving it waiting.
//!
//! When the connection is lost it reconnects with jittered exponential
//! backoff (lines typed meanwhile are sent once back), restores its name and
//! room, shows what was said while it was away and marks where it resumed;
//! a `gap` from the server is fetched and shown the same way
//! (`conversation` decides what to send and show, `recovery` tracks seqs).

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use super::connection::{
    ConnectError, ConnectOptions, Received, Receiver, Sender, WsStream, connect, normalize_url, split,
};
use super::conversation::{Conversation, Effect};
use super::display::Display;
use super::files::{Chunk, Fetcher, Prepared, Transfers};
use super::reconnect::Backoff;
use crate::printable::printable;
use crate::protocol::ClientFrame;

/// How long, after the end of scripted input, to wait for outstanding answers.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a server has to greet a new connection with `welcome`.
pub const WELCOME_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for the server's answer to our close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
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
    /// Where files others share are saved (`files::default_downloads()`).
    pub downloads: std::path::PathBuf,
}

/// The error for a server that is not chorus (no `welcome`).
pub fn no_welcome(url: &str) -> anyhow::Error {
    anyhow::anyhow!("no chorus welcome from {}: is this a chorus server?", normalize_url(url))
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
  /file <path>        share a file with your room (files others share are saved
                      in the downloads folder, see --downloads)
  //text              send a message that starts with /
  /help               this help
  /quit               leave (also ctrl-c or ctrl-d)";

/// One line the user typed, understood.
#[derive(Debug, PartialEq, Eq)]
enum Command<'a> {
    Chat(&'a str),
    Frame(ClientFrame<'a>),
    Binary(&'a str),
    File(&'a str),
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
        ("file", "") => Command::Usage("/file <path>"),
        ("file", path) => Command::File(path),
        ("binary", "") => Command::Usage("/binary <text>"),
        ("binary", _) => Command::Binary(rest["binary".len()..].trim_start()),
        (other, _) => Command::Unknown(other),
    }
}

/// Where output goes: above the line editor, or plain stdout.
enum Output {
    Editor(std::sync::mpsc::SyncSender<String>),
    Plain,
}

impl Output {
    fn print(&mut self, line: String) {
        match self {
            Output::Editor(printer) => {
                if let Err(err) = printer.send(line) {
                    println!("{}", err.0);
                }
            }
            Output::Plain => println!("{line}"),
        }
    }
}

/// What the input side sends to the main loop.
enum Input {
    Line(String),
    /// The end of piped input: send what is left, wait for the answers.
    End,
    /// ctrl-c or ctrl-d on the terminal: leave now.
    Quit,
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
    /// A person types: their input is read in every state (to see /quit
    /// at once); piped input is read only when it can be sent.
    interactive: bool,
    /// `--json`: client notices go to stderr, stdout stays JSON.
    json: bool,
    /// Lines typed while they could not be sent, sent once possible.
    backlog: VecDeque<String>,
    input_done: bool,
}

/// What one read of the input meant for the loop reading it.
enum Typed {
    /// Something to act on now (a line, when the loop can send it).
    Line(String),
    /// Kept in the backlog, or the input ended: carry on.
    Kept,
    Quit,
}

impl Terminal {
    fn apply_prints(&mut self, effects: &mut Vec<Effect>) {
        // The prompt first: the editor redraws it with the lines printed next.
        for effect in effects.iter() {
            if let Effect::Prompt(prompt) = effect {
                *self.prompt.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = prompt.clone();
            }
        }
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
            Effect::Prompt(_) => false,
            _ => true,
        });
    }

    fn notice(&mut self, line: String) {
        self.apply_prints(&mut vec![Effect::Notice(line)]);
    }

    /// Wait for the next input; with `sendable`, a line is handed back to be
    /// sent, otherwise it is kept for later. `/quit` and ctrl-c end at once.
    async fn next(&mut self, sendable: bool) -> Typed {
        match self.input.recv().await {
            Some(Input::Quit) => Typed::Quit,
            Some(Input::Line(line)) if parse_command(&line) == Command::Quit => Typed::Quit,
            Some(Input::Line(line)) if sendable => Typed::Line(line),
            Some(Input::Line(line)) => {
                if matches!(
                    parse_command(&line),
                    Command::Chat(_) | Command::Binary(_) | Command::Frame(_) | Command::File(_)
                ) {
                    if self.interactive {
                        self.notice("! not connected yet: it will be sent once connected".to_string());
                    }
                    self.backlog.push_back(line);
                }
                Typed::Kept
            }
            Some(Input::End) | None => {
                self.input_done = true;
                Typed::Kept
            }
        }
    }

    /// Read input now? Always for a person; for a script, only once what
    /// it already sent has room, so piped input is not read ahead.
    fn listening(&self, ready: bool) -> bool {
        !self.input_done && (self.interactive || (ready && self.backlog.is_empty()))
    }
}

/// Run the client until the user quits; reconnects when the connection is lost.
pub async fn run(options: ClientOptions) -> anyhow::Result<()> {
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let prompt = Arc::new(Mutex::new(String::from("connecting> ")));
    let (input_tx, input) = mpsc::channel::<Input>(64);
    let guard = if interactive { Some(TerminalGuard::save()) } else { None };
    let (output, editor) = if interactive {
        let (printer, editor) = spawn_editor(input_tx, prompt.clone())?;
        (Output::Editor(printer), Some(editor))
    } else {
        spawn_stdin_reader(input_tx);
        (Output::Plain, None)
    };
    let mut terminal = Terminal {
        output,
        input,
        prompt,
        interactive,
        json: options.json,
        backlog: VecDeque::new(),
        input_done: false,
    };
    let outcome = chat(&options, &mut terminal).await;
    if let Some(editor) = editor {
        editor.stop().await;
    }
    drop(guard);
    outcome
}

/// Connect, then converse until done, reconnecting whenever the connection is lost.
async fn chat(options: &ClientOptions, terminal: &mut Terminal) -> anyhow::Result<()> {
    let Some(mut ws) = connect_or_quit(options, terminal).await? else { return Ok(()) };
    let mut display = Display::new(terminal.interactive && Display::color_for_stdout());
    display.show_acks = !terminal.interactive;
    let mut conversation = Conversation::new(display, options.json);
    let mut announced = false;
    let fetcher = Fetcher {
        ws_url: options.url.clone(),
        token: options.connect.token.clone(),
        tls: options.connect.tls.clone(),
        dir: options.downloads.clone(),
    };
    let mut transfers = Transfers::new(fetcher);
    loop {
        let session = Session { conversation: &mut conversation, transfers: &mut transfers, url: &options.url };
        match converse(ws, session, terminal, &mut announced).await {
            Ended::Done(result) => return result,
            Ended::Lost(why) => {
                let mut effects = conversation.disconnected();
                effects.extend(transfers.uploads.interrupted().into_iter().map(Effect::Notice));
                terminal.apply_prints(&mut effects);
                let why = printable(&why).into_owned();
                if terminal.input_done && terminal.backlog.is_empty() {
                    anyhow::bail!("the connection to the server was lost ({why})");
                }
                terminal.notice(format!("! connection lost ({why}); reconnecting"));
                match reconnect(options, terminal).await? {
                    Some(new) => ws = new,
                    None => return Ok(()),
                }
                conversation.reconnected();
            }
        }
    }
}

/// The first connection, unless the user quits while it is being made.
async fn connect_or_quit(options: &ClientOptions, terminal: &mut Terminal) -> anyhow::Result<Option<WsStream>> {
    let connecting = connect(&options.url, &options.connect);
    tokio::pin!(connecting);
    loop {
        tokio::select! {
            result = &mut connecting => return Ok(Some(result?)),
            typed = terminal.next(false), if terminal.interactive && !terminal.input_done => {
                if matches!(typed, Typed::Quit) {
                    return Ok(None);
                }
            }
        }
    }
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
                normalize_url(&options.url),
                SCRIPT_PATIENCE.as_secs(),
                terminal.backlog.len()
            );
        }
        let wake = tokio::time::Instant::now() + backoff.next_delay();
        let attempt = async {
            tokio::time::sleep_until(wake).await;
            connect(&options.url, &options.connect).await
        };
        tokio::pin!(attempt);
        let result = loop {
            tokio::select! {
                result = &mut attempt => break result,
                typed = terminal.next(false), if !terminal.input_done => match typed {
                    Typed::Quit => return Ok(None),
                    _ if terminal.input_done && terminal.backlog.is_empty() => return Ok(None),
                    _ => {}
                },
            }
        };
        match result {
            Ok(ws) => {
                let url = normalize_url(&options.url);
                terminal.notice(format!("* reconnected to {url} (attempt {})", backoff.attempts()));
                return Ok(Some(ws));
            }
            Err(err) => {
                let why = match &err {
                    ConnectError::Unreachable { error, .. } => error.to_string(),
                    other => other.to_string(),
                };
                terminal.notice(format!("! reconnect attempt {} failed: {}", backoff.attempts(), printable(&why)));
            }
        }
    }
}

/// What one connection works on: the conversation, the transfers, the URL.
struct Session<'a> {
    conversation: &'a mut Conversation,
    transfers: &'a mut Transfers,
    url: &'a str,
}

/// One connection, until it ends.
async fn converse(ws: WsStream, session: Session<'_>, terminal: &mut Terminal, announced: &mut bool) -> Ended {
    let Session { conversation, transfers, url } = session;
    let (mut sender, mut receiver) = split(ws);
    let deadline = tokio::time::sleep(WELCOME_TIMEOUT);
    tokio::pin!(deadline);
    let mut draining = false;
    loop {
        let ready = conversation.welcomed() && conversation.pending() < MAX_IN_FLIGHT;
        let mut effects = tokio::select! {
            typed = terminal.next(ready && terminal.backlog.is_empty()), if terminal.listening(ready) => match typed {
                Typed::Quit => return close(sender, receiver).await,
                Typed::Line(line) => handle_line(&line, conversation, terminal, transfers),
                Typed::Kept => Vec::new(),
            },
            () = std::future::ready(()), if ready && !terminal.backlog.is_empty() => {
                let line = terminal.backlog.pop_front().unwrap_or_default();
                handle_line(&line, conversation, terminal, transfers)
            }
            received = receiver.recv() => match received {
                None => return Ended::Lost("the connection dropped".to_string()),
                Some(Err(err)) => return Ended::Lost(err.to_string()),
                Some(Ok(Received::Closed(frame))) => {
                    let why = frame.map_or_else(|| "closed without a code".to_string(), |f| format!("{} {}", u16::from(f.code), f.reason));
                    return Ended::Lost(why);
                }
                Some(Ok(received)) if !conversation.welcomed() && !is_welcome(&received) => {
                    return Ended::Done(Err(no_welcome(url)));
                }
                Some(Ok(received)) => on_received(received, conversation, transfers),
            },
            prepared = transfers.prepared.recv(), if ready => offer(prepared, conversation, transfers),
            Some(note) = transfers.notes.recv() => {
                transfers.noted(&note);
                vec![Effect::Notice(note.line)]
            }
            chunk = transfers.uploads.next_chunk(), if conversation.welcomed() && transfers.uploads.can_send() => {
                send_chunk(chunk, transfers)
            }
            () = &mut deadline, if !conversation.welcomed() || draining => {
                if !conversation.welcomed() {
                    return Ended::Done(Err(no_welcome(url)));
                }
                terminal.notice(format!("! no answer to {} request(s) within {DRAIN_TIMEOUT:?}", conversation.pending()));
                return close(sender, receiver).await;
            }
        };
        if conversation.welcomed() && !*announced && terminal.interactive {
            *announced = true;
            effects.insert(
                0,
                Effect::Notice(format!("* connected to {}; type /help for the commands", normalize_url(url))),
            );
        }
        terminal.apply_prints(&mut effects);
        if let Err(err) = carry_out(effects, &mut sender).await {
            return Ended::Lost(format!("sending failed: {err}"));
        }
        if terminal.input_done && terminal.backlog.is_empty() && conversation.welcomed() {
            if conversation.pending() == 0 && !transfers.busy() {
                return close(sender, receiver).await;
            }
            if !draining && !transfers.busy() {
                draining = true;
                deadline.as_mut().reset(tokio::time::Instant::now() + DRAIN_TIMEOUT);
            }
        }
    }
}

/// A file read and hashed for `/file`: offer it (or say why not).
fn offer(
    prepared: Option<Result<Prepared, String>>,
    conversation: &mut Conversation,
    transfers: &mut Transfers,
) -> Vec<Effect> {
    transfers.prepared_one();
    match prepared {
        Some(Ok(file)) => {
            let client_id = format!("file-{}", rand::random::<u32>());
            vec![conversation.request(transfers.uploads.offer(file, client_id))]
        }
        Some(Err(why)) => vec![Effect::Notice(format!("! {}", printable(&why)))],
        None => Vec::new(),
    }
}

/// The next chunk of an upload, or the upload given up when reading failed.
fn send_chunk(chunk: Result<Chunk, (String, String)>, transfers: &mut Transfers) -> Vec<Effect> {
    match chunk {
        Ok(chunk) => vec![Effect::Send(chunk.header), Effect::SendBinary(chunk.bytes)],
        Err((upload_id, why)) => {
            let cancel = ClientFrame::FileCancel { upload_id: upload_id.clone().into() };
            let line = transfers.uploads.finished(&upload_id, Some(&why));
            let mut effects = vec![Effect::Send(cancel)];
            effects.extend(line.map(Effect::Notice));
            effects
        }
    }
}

/// One thing from the server: what the transfers make of it, then what the
/// conversation does.
fn on_received(received: Received, conversation: &mut Conversation, transfers: &mut Transfers) -> Vec<Effect> {
    let line = received.event().and_then(|event| transfers.on_event(&event));
    let mut effects = conversation.on_received(received);
    effects.extend(line.map(Effect::Notice));
    effects
}

/// Is this the `welcome` every chorus connection starts with?
fn is_welcome(received: &Received) -> bool {
    matches!(received.event(), Some(crate::protocol::ServerEvent::Welcome { .. }))
}

/// Send what the effects ask for.
async fn carry_out(effects: Vec<Effect>, sender: &mut Sender) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    for effect in effects {
        match effect {
            Effect::Send(frame) => sender.send_frame(&frame).await?,
            Effect::SendBinary(data) => sender.send_binary(data).await?,
            _ => {}
        }
    }
    Ok(())
}

/// Close with 1000 and wait briefly for the server's reply, so the close is clean.
async fn close(mut sender: Sender, mut receiver: Receiver) -> Ended {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sender.close()).await;
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while let Some(Ok(received)) = receiver.recv().await {
            if matches!(received, Received::Closed(_)) {
                break;
            }
        }
    })
    .await;
    Ended::Done(Ok(()))
}

/// Act on one typed line (not `/quit`, handled before): the effects to carry out.
fn handle_line(
    line: &str,
    conversation: &mut Conversation,
    terminal: &mut Terminal,
    transfers: &mut Transfers,
) -> Vec<Effect> {
    let effect = match parse_command(line) {
        Command::Quit | Command::Nothing => return Vec::new(),
        Command::Help => Effect::Notice(HELP.to_string()),
        Command::Usage(usage) => Effect::Notice(format!("! usage: {usage}")),
        Command::Unknown(name) => Effect::Notice(format!("! unknown command /{name}; /help lists the commands")),
        Command::Chat(text) => conversation.chat(text),
        Command::Frame(frame) => conversation.request(into_owned(frame)),
        Command::Binary(text) => conversation.binary(text.as_bytes().to_vec()),
        Command::File(path) => {
            transfers.share(path);
            return Vec::new();
        }
    };
    let mut effects = vec![effect];
    terminal.apply_prints(&mut effects);
    effects
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

/// The line editor's thread, and how to stop it.
struct Editor {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Editor {
    /// Ask the editor to return (it restores the terminal) and wait a little for it.
    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread;
        let _ = tokio::time::timeout(Duration::from_secs(1), tokio::task::spawn_blocking(move || thread.join())).await;
    }
}

/// The prompt, as the conversation last set it (read at every redraw).
struct SharedPrompt(Arc<Mutex<String>>);

impl reedline::Prompt for SharedPrompt {
    fn render_prompt_left(&self) -> std::borrow::Cow<'_, str> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone().into()
    }

    fn render_prompt_right(&self) -> std::borrow::Cow<'_, str> {
        "".into()
    }

    fn render_prompt_indicator(&self, _mode: reedline::PromptEditMode) -> std::borrow::Cow<'_, str> {
        "".into()
    }

    fn render_prompt_multiline_indicator(&self) -> std::borrow::Cow<'_, str> {
        "... ".into()
    }

    fn render_prompt_history_search_indicator(
        &self,
        search: reedline::PromptHistorySearch,
    ) -> std::borrow::Cow<'_, str> {
        format!("(search: {}) ", search.term).into()
    }
}

/// Start the line editor on its own thread; returns the printer for output.
fn spawn_editor(
    input: mpsc::Sender<Input>,
    prompt: Arc<Mutex<String>>,
) -> anyhow::Result<(std::sync::mpsc::SyncSender<String>, Editor)> {
    use reedline::Signal;
    let printer = reedline::ExternalPrinter::new(4096);
    let lines = printer.sender();
    let stop = Arc::new(AtomicBool::new(false));
    let mut editor = reedline::Reedline::create()
        .with_external_printer(printer)
        .with_break_signal(stop.clone())
        .with_poll_interval(Duration::from_millis(20));
    let prompt = SharedPrompt(prompt);
    let thread = std::thread::Builder::new()
        .name("line editor".into())
        .spawn(move || {
            loop {
                let sent = match editor.read_line(&prompt) {
                    Ok(Signal::Success(line)) => input.blocking_send(Input::Line(line)),
                    Ok(Signal::CtrlC | Signal::CtrlD) | Err(_) => input.blocking_send(Input::Quit),
                    Ok(Signal::ExternalBreak(_)) => break,
                    Ok(_) => Ok(()),
                };
                if sent.is_err() {
                    break;
                }
            }
        })
        .context("starting the line editor")?;
    Ok((lines, Editor { stop, thread }))
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

/// Puts the terminal back as it was, should the editor thread not have
/// returned in time to do it itself.
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
