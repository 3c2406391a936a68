//! Scripted conversations: a group's `script`, a list of steps each client
//! follows in order (connect, join, read history, say, send binary or a file,
//! rename, think, wait for a message, leave, loops), validated into a flat
//! program of `Op`s, and the templates its texts are written in.
//!
//! This module is pure: the file's steps in, a `Script` out (errors name the
//! key and the fix); `scripted.rs` runs a script inside a bot.

use std::time::Duration;

use serde::Deserialize;

use super::scenario::{DurationRange, DurationValue, Protocol, Range, SizeValue};

/// A step as written: one action key, plus the modifiers that go with it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    connect: Option<bool>,
    leave: Option<bool>,
    join: Option<String>,
    history: Option<i64>,
    say: Option<String>,
    binary: Option<SizeValue>,
    file: Option<SizeValue>,
    /// With `file`: the file's name (a template).
    name: Option<String>,
    rename: Option<String>,
    think: Option<DurationRange>,
    wait_for: Option<String>,
    /// With `wait_for`: how long to wait (default 10s).
    timeout: Option<DurationValue>,
    /// With `wait_for`: the check's name in the report (default: the step as written).
    check: Option<String>,
    #[serde(rename = "loop")]
    repeat: Option<i64>,
    #[serde(rename = "do")]
    body: Option<Vec<RawStep>>,
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(String),
    /// `{bot}`: the client's number in the run.
    Bot,
    /// `{seq}`: the client's count of messages sent so far, this one included.
    Seq,
    /// `{room}`: the client's room now.
    Room,
    /// `{group}`: the client's group.
    Group,
    /// `{random(N)}`: N random letters and digits.
    Random(usize),
    /// `{line}` or `{line:NAME}`: the next line of a data file (index in `Scenario::data`).
    Line(usize),
}

/// A text with placeholders, rendered by each client when the step runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub parts: Vec<Part>,
}

impl Template {
    /// Is it plain text (no placeholder)?
    pub fn literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Text(text)] => Some(text),
            _ => None,
        }
    }
}

/// How a data file's lines are handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Each client reads the lines in order, client k starting at line k, wrapping around.
    Order,
    /// Each line drawn at random (from the client's seeded generator).
    Random,
}

/// A data file: one text per line (blank lines skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSet {
    pub name: String,
    pub lines: Vec<String>,
    pub pick: Pick,
}

/// What one step does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Open a connection (the client was disconnected: a script starting with
    /// `connect` waits for this step to connect at all).
    Connect,
    /// Close the connection (normal close); the script goes on offline.
    Leave,
    /// Move to a room and wait until the server confirms.
    Join(Template),
    /// Read the last N messages of the current room and wait for them.
    History(u32),
    /// A text message (stamped and accounted like the rate-driven ones).
    Say(Template),
    /// A binary message of this size.
    Binary(Range<usize>),
    /// Upload a file of this size and wait until it is stored (or refused).
    File {
        size: Range<usize>,
        name: Template,
    },
    Rename(Template),
    Think(Range<Duration>),
    /// Wait for a chat whose text contains the pattern: a check, passed if it
    /// comes within the timeout.
    WaitFor {
        pattern: Template,
        timeout: Duration,
        check: String,
    },
}

/// One instruction of a script's program.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Act(Action),
    /// Run the ops up to the matching `EndLoop` `times` times; `end` is its index.
    Loop {
        times: u32,
        end: usize,
    },
    /// Back to the op after `start` while the loop has turns left.
    EndLoop {
        start: usize,
    },
}

/// A validated script.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    pub ops: Vec<Op>,
    /// The script's first step (after thinking) is `connect`: the client starts disconnected.
    pub starts_offline: bool,
}

impl Script {
    /// Every room a `join` names as plain text.
    pub fn literal_rooms(&self) -> impl Iterator<Item = &str> {
        self.ops.iter().filter_map(|op| match op {
            Op::Act(Action::Join(room)) => room.literal(),
            _ => None,
        })
    }

    /// Does the script upload files?
    pub fn sends_files(&self) -> bool {
        self.ops.iter().any(|op| matches!(op, Op::Act(Action::File { .. })))
    }
}

/// The largest file a scenario may upload (each uploading client holds its file in memory).
pub const MAX_FILE_SIZE: usize = 256 << 20;

/// What a step is checked against.
pub(super) struct Context<'a> {
    pub key: String,
    pub protocol: Protocol,
    pub data: &'a [DataSet],
}

/// Why a step is refused: (key, message).
pub(super) type StepError = (String, String);

/// The parts of the scenario validator a script needs.
pub(super) trait Values {
    fn duration(&self, key: &str, value: &DurationValue) -> Result<Duration, StepError>;
    fn size_range(&self, key: &str, value: &SizeValue, min: usize, max: usize) -> Result<Range<usize>, StepError>;
}

pub(super) const ACTIONS: &str = "connect, leave, join, history, say, binary, file, rename, think, wait_for or loop";

/// Validate a script: its steps, its templates, and that it is connected
/// wherever a step needs a connection (a loop must end as connected as it began).
pub(super) fn validate(raw: &[RawStep], cx: &Context<'_>, values: &dyn Values) -> Result<Script, StepError> {
    if raw.is_empty() {
        return Err((cx.key.clone(), "is empty: list at least one step, e.g. script = [{ say = \"hi\" }]".into()));
    }
    // `connect` first (after some thinking, maybe): the client arrives then.
    let starts_offline = raw.iter().find(|s| s.think.is_none()).is_some_and(|s| s.connect.is_some());
    let mut builder = Builder { cx, values, ops: Vec::new(), connected: !starts_offline };
    builder.steps(raw, &cx.key)?;
    Ok(Script { ops: builder.ops, starts_offline })
}

struct Builder<'a> {
    cx: &'a Context<'a>,
    values: &'a dyn Values,
    ops: Vec<Op>,
    /// Whether the client is connected at this point of the script.
    connected: bool,
}

impl Builder<'_> {
    fn steps(&mut self, raw: &[RawStep], key: &str) -> Result<(), StepError> {
        for (i, step) in raw.iter().enumerate() {
            self.step(step, &format!("{key}[{i}]"))?;
        }
        Ok(())
    }

    fn step(&mut self, step: &RawStep, key: &str) -> Result<(), StepError> {
        let actions = action_keys(step);
        let [action] = actions.as_slice() else {
            let message = if actions.is_empty() {
                format!("has no action: give one of {ACTIONS}")
            } else {
                format!("has {} actions ({}): one per step, as separate steps", actions.len(), actions.join(", "))
            };
            return Err((key.to_string(), message));
        };
        self.modifiers(step, action, key)?;
        let at = |field: &str| format!("{key}.{field}");
        if *action == "loop" {
            return self.repeat(step, key);
        }
        let action = self.action(step, action, &at(action))?;
        let needs_connection = !matches!(action, Action::Think(_) | Action::Connect);
        match action {
            Action::Connect if self.connected => {
                return Err((
                    at("connect"),
                    "the client is connected here already: `connect` only after `leave` (or first, to start offline)"
                        .into(),
                ));
            }
            Action::Connect => self.connected = true,
            Action::Leave => {
                if !self.connected {
                    return Err((at("leave"), "the client is not connected here (it left already)".into()));
                }
                self.connected = false;
            }
            _ if needs_connection && !self.connected => {
                return Err((
                    key.to_string(),
                    "needs a connection, but the client left before it: add { connect = true } first".into(),
                ));
            }
            _ => {}
        }
        self.ops.push(Op::Act(action));
        Ok(())
    }

    /// `loop = N, do = [...]`.
    fn repeat(&mut self, step: &RawStep, key: &str) -> Result<(), StepError> {
        let times = match step.repeat {
            Some(n) if (1..=1_000_000).contains(&n) => n as u32,
            Some(n) => return Err((format!("{key}.loop"), format!("must be a count from 1 to 1000000 (got {n})"))),
            None => 0,
        };
        let Some(body) = step.body.as_deref().filter(|b| !b.is_empty()) else {
            return Err((
                format!("{key}.do"),
                "is missing: the steps to repeat, e.g. do = [{ say = \"hi\" }, { think = \"1s\" }]".into(),
            ));
        };
        let connected = self.connected;
        let start = self.ops.len();
        self.ops.push(Op::Loop { times, end: 0 });
        self.steps(body, &format!("{key}.do"))?;
        if self.connected != connected {
            let (was, is) = if connected { ("connected", "disconnected") } else { ("disconnected", "connected") };
            return Err((
                format!("{key}.do"),
                format!("starts {was} and ends {is}: a loop must end as it began (pair each leave with a connect)"),
            ));
        }
        let end = self.ops.len();
        self.ops.push(Op::EndLoop { start });
        self.ops[start] = Op::Loop { times, end };
        Ok(())
    }

    fn modifiers(&self, step: &RawStep, action: &str, key: &str) -> Result<(), StepError> {
        let stray = [
            ("timeout", step.timeout.is_some(), "wait_for"),
            ("check", step.check.is_some(), "wait_for"),
            ("name", step.name.is_some(), "file"),
            ("do", step.body.is_some(), "loop"),
        ];
        for (field, present, owner) in stray {
            if present && action != owner {
                return Err((format!("{key}.{field}"), format!("goes with {owner} only")));
            }
        }
        Ok(())
    }

    fn action(&self, step: &RawStep, action: &str, key: &str) -> Result<Action, StepError> {
        let cx = self.cx;
        let chorus_only = |what: &str| -> Result<(), StepError> {
            if cx.protocol.speaks_chorus() {
                Ok(())
            } else {
                Err((
                    key.to_string(),
                    format!("raw servers have no {what}: use say, binary, think, wait_for, leave, connect or loop"),
                ))
            }
        };
        let template = |text: &str| template(text, cx.data).map_err(|why| (key.to_string(), why));
        Ok(match action {
            "connect" | "leave" if step.connect == Some(false) || step.leave == Some(false) => {
                return Err((key.to_string(), format!("takes true only: {action} = true, or leave the step out")));
            }
            "connect" => Action::Connect,
            "leave" => Action::Leave,
            "join" => {
                chorus_only("rooms")?;
                let mut room = template(step.join.as_deref().unwrap_or_default())?;
                if let Some(literal) = room.literal() {
                    // In the form the server uses (NFKC), so its `joined` matches.
                    let normal = crate::names::room(literal)
                        .map_err(|why| (key.to_string(), format!("is not a room name the server accepts: {why}")))?;
                    room = Template { parts: vec![Part::Text(normal)] };
                }
                Action::Join(room)
            }
            "history" => {
                chorus_only("history")?;
                match step.history {
                    Some(n) if (1..=i64::from(crate::protocol::HISTORY_MAX_LIMIT)).contains(&n) => {
                        Action::History(n as u32)
                    }
                    Some(n) => {
                        let max = crate::protocol::HISTORY_MAX_LIMIT;
                        return Err((
                            key.to_string(),
                            format!("must be a number of messages from 1 to {max} (got {n})"),
                        ));
                    }
                    None => unreachable!("an action key is present"),
                }
            }
            "say" => {
                let text = template(step.say.as_deref().unwrap_or_default())?;
                if text.literal() == Some("") {
                    return Err((key.to_string(), "is empty: the server refuses empty messages".into()));
                }
                Action::Say(text)
            }
            "binary" => {
                let size = step.binary.as_ref().unwrap_or_else(|| unreachable!("present"));
                Action::Binary(self.values.size_range(key, size, super::stamp::BINARY_STAMP_LEN, 16 << 20)?)
            }
            "file" => {
                chorus_only("files")?;
                self.file(step, key)?
            }
            "rename" => {
                chorus_only("renames")?;
                let name = template(step.rename.as_deref().unwrap_or_default())?;
                if let Some(literal) = name.literal() {
                    // The server's own rule, so a name it would refuse is refused here.
                    crate::names::username(literal)
                        .map_err(|why| (key.to_string(), format!("is not a name the server accepts: {why}")))?;
                }
                Action::Rename(name)
            }
            "think" => Action::Think(self.think(step, key)?),
            "wait_for" => self.wait_for(step, key)?,
            other => unreachable!("{other} is an action key"),
        })
    }

    fn file(&self, step: &RawStep, key: &str) -> Result<Action, StepError> {
        let size = step.file.as_ref().unwrap_or_else(|| unreachable!("present"));
        let size = self.values.size_range(key, size, super::stamp::BINARY_STAMP_LEN, MAX_FILE_SIZE)?;
        let name = template(step.name.as_deref().unwrap_or("{group}-{bot}-{seq}.bin"), self.cx.data)
            .map_err(|why| (format!("{key}.name"), why))?;
        if let Some(bad) = name.literal().and_then(crate::protocol::check_file_name) {
            return Err((format!("{key}.name"), bad));
        }
        Ok(Action::File { size, name })
    }

    fn wait_for(&self, step: &RawStep, key: &str) -> Result<Action, StepError> {
        let written = step.wait_for.clone().unwrap_or_default();
        if written.is_empty() {
            return Err((key.to_string(), "is empty: give the text to wait for".into()));
        }
        // `timeout` and `check` sit beside `wait_for` in the step: name them so.
        let beside = |field: &str| format!("{}.{field}", key.strip_suffix(".wait_for").unwrap_or(key));
        let timeout_key = beside("timeout");
        let timeout = match &step.timeout {
            Some(t) => self.values.duration(&timeout_key, t)?,
            None => Duration::from_secs(10),
        };
        if timeout.is_zero() {
            return Err((timeout_key, "must be more than 0s: the check would fail at once".into()));
        }
        if step.check.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Err((
                beside("check"),
                "is empty: name the check, or leave the key out for \"wait_for TEXT\"".into(),
            ));
        }
        let check = step.check.clone().unwrap_or_else(|| format!("wait_for {written:?}"));
        let pattern = template(&written, self.cx.data).map_err(|why| (key.to_string(), why))?;
        Ok(Action::WaitFor { pattern, timeout, check })
    }

    fn think(&self, step: &RawStep, key: &str) -> Result<Range<Duration>, StepError> {
        match step.think.as_ref().unwrap_or_else(|| unreachable!("present")) {
            DurationRange::One(d) => {
                let d = self.values.duration(key, d)?;
                Ok(Range { min: d, max: d })
            }
            DurationRange::Range([a, b]) => {
                let range = Range { min: self.values.duration(key, a)?, max: self.values.duration(key, b)? };
                if range.min > range.max {
                    return Err((key.to_string(), "[min, max] needs min <= max".into()));
                }
                Ok(range)
            }
        }
    }
}

/// The action keys a step has.
fn action_keys(step: &RawStep) -> Vec<&'static str> {
    [
        ("connect", step.connect.is_some()),
        ("leave", step.leave.is_some()),
        ("join", step.join.is_some()),
        ("history", step.history.is_some()),
        ("say", step.say.is_some()),
        ("binary", step.binary.is_some()),
        ("file", step.file.is_some()),
        ("rename", step.rename.is_some()),
        ("think", step.think.is_some()),
        ("wait_for", step.wait_for.is_some()),
        ("loop", step.repeat.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, present)| present.then_some(name))
    .collect()
}

const PLACEHOLDERS: &str =
    "{bot}, {seq}, {room}, {group}, {random(N)}, {line} or {line:NAME} (write {{ and }} for braces)";

/// Parse a template; the error names the bad placeholder and the good ones.
pub fn template(text: &str, data: &[DataSet]) -> Result<Template, String> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(['{', '}']) {
        literal.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("{{").or_else(|| tail.strip_prefix("}}")) {
            literal.push_str(&tail[..1]);
            rest = after;
            continue;
        }
        if tail.starts_with('}') {
            return Err(format!("has a lone }}: write }}}} for a brace, or use a placeholder: {PLACEHOLDERS}"));
        }
        let Some(close) = tail.find('}') else {
            return Err(format!("has an unclosed {{: write {{{{ for a brace, or use a placeholder: {PLACEHOLDERS}"));
        };
        let part = placeholder(&tail[1..close], data)?;
        if !literal.is_empty() {
            parts.push(Part::Text(std::mem::take(&mut literal)));
        }
        parts.push(part);
        rest = &tail[close + 1..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        parts.push(Part::Text(literal));
    }
    Ok(Template { parts })
}

fn placeholder(name: &str, data: &[DataSet]) -> Result<Part, String> {
    match name.trim() {
        "bot" => return Ok(Part::Bot),
        "seq" => return Ok(Part::Seq),
        "room" => return Ok(Part::Room),
        "group" => return Ok(Part::Group),
        "line" => {
            return match data {
                [_] => Ok(Part::Line(0)),
                [] => {
                    Err("uses {line} but the scenario has no data file: add [data.lines] with file = \"lines.txt\""
                        .into())
                }
                _ => {
                    let names: Vec<&str> = data.iter().map(|d| d.name.as_str()).collect();
                    Err(format!(
                        "uses {{line}} but there are several data files: name one, {{line:{}}}",
                        names.join("}, {line:")
                    ))
                }
            };
        }
        _ => {}
    }
    if let Some(set) = name.strip_prefix("line:") {
        return match data.iter().position(|d| d.name == set.trim()) {
            Some(i) => Ok(Part::Line(i)),
            None => Err(format!("uses {{{name}}} but there is no [data.{}]", set.trim())),
        };
    }
    if let Some(n) = name.strip_prefix("random(").and_then(|r| r.strip_suffix(')')) {
        return match n.trim().parse::<usize>() {
            Ok(n) if (1..=4096).contains(&n) => Ok(Part::Random(n)),
            _ => Err(format!("has {{{name}}}: random takes a length from 1 to 4096, like {{random(8)}}")),
        };
    }
    Err(format!("has an unknown placeholder {{{name}}}; use {PLACEHOLDERS}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> Vec<DataSet> {
        vec![DataSet { name: "lines".into(), lines: vec!["a".into()], pick: Pick::Order }]
    }

    #[test]
    fn templates_split_into_parts() {
        let t = template("hi {bot} in {room}: {random(4)} {line}{{x}}", &data()).unwrap();
        assert_eq!(
            t.parts,
            [
                Part::Text("hi ".into()),
                Part::Bot,
                Part::Text(" in ".into()),
                Part::Room,
                Part::Text(": ".into()),
                Part::Random(4),
                Part::Text(" ".into()),
                Part::Line(0),
                Part::Text("{x}".into()),
            ]
        );
        assert_eq!(template("plain", &[]).unwrap().literal(), Some("plain"));
        assert!(template("{nope}", &[]).unwrap_err().contains("{bot}, {seq}"));
        assert!(template("{line}", &[]).unwrap_err().contains("[data.lines]"));
        assert!(template("{line:other}", &data()).unwrap_err().contains("no [data.other]"));
        assert!(template("{random(0)}", &[]).unwrap_err().contains("from 1 to 4096"));
        assert!(template("open {", &[]).unwrap_err().contains("unclosed"));
        assert!(template("close }", &[]).unwrap_err().contains("lone"));
    }
}
