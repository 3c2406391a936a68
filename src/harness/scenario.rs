//! Scenario files: TOML parsed in two stages, first into a serde mirror of the
//! file (`RawScenario`), then validated into a `Scenario` whose every field is
//! known good. Errors name the file, the key and the fix.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::script::{self, DataSet, Pick, RawStep, Script};
use super::thresholds::Threshold;
use crate::server::{Profile, ServerConfig, ServerSettings};
use crate::units::{parse_duration, parse_size};

/// Bytes a binary payload needs for its stamp.
pub use super::stamp::BINARY_STAMP_LEN;
/// Characters a raw-protocol text needs for its stamp.
pub use super::stamp::TEXT_STAMP_MAX_LEN;

/// A scenario file that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error(
        "cannot read scenario {file}: {error}; check the path (the shipped scenarios are in scenarios/, e.g. scenarios/smoke.toml)"
    )]
    Read { file: String, error: std::io::Error },
    #[error("scenario {file}: {message}")]
    Parse { file: String, message: String },
    #[error("scenario {file}: {key} {message}")]
    Invalid { file: String, key: String, message: String },
}

// ---- stage 1: the file as written -------------------------------------------------

/// A duration written as `"10s"` or as a number of seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum DurationValue {
    Text(String),
    Seconds(f64),
}

/// A size written as a number, `"4KiB"`, or a `[min, max]` range of either.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum SizeValue {
    One(OneSize),
    Range([OneSize; 2]),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum OneSize {
    Bytes(i64),
    Text(String),
}

/// A duration or a `[min, max]` range of durations.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum DurationRange {
    One(DurationValue),
    Range([DurationValue; 2]),
}

/// A rate multiplier, constant or changing linearly over a phase.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum ScaleValue {
    One(f64),
    Ramp([f64; 2]),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    description: Option<String>,
    seed: Option<u64>,
    duration: Option<DurationValue>,
    ramp_up: Option<DurationValue>,
    drain: Option<DurationValue>,
    protocol: Option<String>,
    target: Option<String>,
    /// Several servers (nodes of one cluster): clients spread over them.
    targets: Option<Vec<String>>,
    /// How clients spread over the targets: "round-robin" (default) or "group".
    spread: Option<String>,
    /// How long one client may take to connect (default 10s).
    connect_timeout: Option<DurationValue>,
    /// The embedded server's settings: the same keys as `chorus server`'s flags.
    server: Option<ServerSettings>,
    #[serde(default, rename = "phase")]
    phases: Vec<RawPhase>,
    #[serde(default, rename = "group")]
    groups: Vec<RawGroup>,
    #[serde(default)]
    thresholds: BTreeMap<String, String>,
    /// Data files for script templates (`{line:NAME}`), by name.
    #[serde(default)]
    data: BTreeMap<String, RawData>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawData {
    file: String,
    pick: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPhase {
    #[serde(rename = "type")]
    kind: Option<String>,
    name: Option<String>,
    duration: Option<DurationValue>,
    rate: Option<ScaleValue>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: Option<String>,
    clients: Option<i64>,
    room: Option<String>,
    rooms: Option<Vec<String>>,
    rate: Option<f64>,
    arrival: Option<String>,
    think_time: Option<DurationRange>,
    mix: Option<RawMix>,
    text_size: Option<SizeValue>,
    binary_size: Option<SizeValue>,
    churn: Option<RawChurn>,
    stop_reading_after: Option<DurationValue>,
    resume_reading_after: Option<DurationValue>,
    recv_buffer: Option<OneSize>,
    file_size: Option<SizeValue>,
    script: Option<Vec<RawStep>>,
    /// Which of the targets (1-based) this group's clients connect to.
    target: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMix {
    #[serde(default)]
    text: Option<i64>,
    #[serde(default)]
    binary: Option<i64>,
    #[serde(default)]
    rename: Option<i64>,
    #[serde(default)]
    file: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChurn {
    every: DurationValue,
    downtime: Option<DurationValue>,
}

// ---- stage 2: the validated scenario -----------------------------------------------

/// What the harness speaks to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// chorus wire protocol v1: JSON envelopes, acks, rooms.
    Chorus,
    /// chorus, but messages go out as plain text frames (as wscat sends
    /// them): no `client_id`, the stamp starts the text.
    ChorusPlain,
    /// Any server that relays text and binary frames verbatim to the other clients.
    Raw,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Chorus => "chorus",
            Protocol::ChorusPlain => "chorus-plain",
            Protocol::Raw => "raw",
        }
    }

    /// By its name in a scenario file.
    pub fn from_name(name: &str) -> Option<Protocol> {
        [Protocol::Chorus, Protocol::ChorusPlain, Protocol::Raw].into_iter().find(|p| p.as_str() == name)
    }

    /// Does the target speak chorus (welcome, acks, rooms)?
    pub fn speaks_chorus(self) -> bool {
        self != Protocol::Raw
    }

    /// Does the stamp travel at the start of the text?
    pub fn stamps_text(self) -> bool {
        self != Protocol::Chorus
    }
}

/// How a group's clients pace their messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Open model, evenly spaced sends.
    Uniform,
    /// Open model, exponentially distributed gaps (a Poisson process).
    Poisson,
    /// Closed model: send, wait for the ack, think, send again.
    Closed,
}

/// A `[min, max]` range (both inclusive) of sizes or durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range<T> {
    pub min: T,
    pub max: T,
}

/// Message kind weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    pub text: u32,
    pub binary: u32,
    pub rename: u32,
    /// File uploads of `file_size`.
    pub file: u32,
}

impl Mix {
    pub fn total(&self) -> u32 {
        self.text + self.binary + self.rename + self.file
    }
}

/// Clients that drop their connection and come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Churn {
    /// Mean time connected between drops (exponentially distributed).
    pub every: Duration,
    /// Time disconnected before reconnecting.
    pub downtime: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: String,
    pub clients: usize,
    /// Rooms the clients are spread over, round-robin.
    pub rooms: Vec<String>,
    /// Messages per second per client.
    pub rate: f64,
    pub arrival: Arrival,
    /// Closed model only: pause after each ack.
    pub think_time: Range<Duration>,
    pub mix: Mix,
    pub text_size: Range<usize>,
    pub binary_size: Range<usize>,
    pub churn: Option<Churn>,
    /// The clients stop reading from their socket this long after the first steady phase starts.
    pub stop_reading_after: Option<Duration>,
    /// With `stop_reading_after`: the clients read again this long after the first steady phase starts.
    pub resume_reading_after: Option<Duration>,
    /// The clients' socket receive buffer (`None`: the system's).
    pub recv_buffer: Option<u32>,
    /// Size of the files the mix uploads.
    pub file_size: Range<usize>,
    /// Steps each client follows, besides (or instead of) the rate mix.
    pub script: Option<Script>,
    /// The target (0-based, into the scenario's targets) every client of
    /// this group connects to; `None`: the scenario's `spread` decides.
    pub target: Option<usize>,
}

/// Connections are opened evenly over a ramp; sending is scaled by `rate` (default 0).
#[derive(Debug, Clone, PartialEq)]
pub struct Ramp {
    pub duration: Duration,
    pub rate: (f64, f64),
}

/// Every client sends at its group rate times `rate` (from, to: linear over the phase).
#[derive(Debug, Clone, PartialEq)]
pub struct Steady {
    pub name: String,
    pub duration: Duration,
    pub rate: (f64, f64),
}

/// Nobody sends; in-flight deliveries are awaited.
#[derive(Debug, Clone, PartialEq)]
pub struct Drain {
    pub duration: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    Ramp(Ramp),
    Steady(Steady),
    Drain(Drain),
}

impl Phase {
    pub fn duration(&self) -> Duration {
        match self {
            Phase::Ramp(p) => p.duration,
            Phase::Steady(p) => p.duration,
            Phase::Drain(p) => p.duration,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Phase::Ramp(_) => "ramp",
            Phase::Steady(p) => &p.name,
            Phase::Drain(_) => "drain",
        }
    }

    /// The rate multiplier at the start and end of the phase.
    pub fn rate(&self) -> (f64, f64) {
        match self {
            Phase::Ramp(p) => p.rate,
            Phase::Steady(p) => p.rate,
            Phase::Drain(_) => (0.0, 0.0),
        }
    }
}

/// A validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// The file it came from, for messages.
    pub file: String,
    pub seed: u64,
    pub protocol: Protocol,
    /// The servers to load (`target = "ws://..."` or `targets = [...]`);
    /// empty: an embedded server.
    pub targets: Vec<String>,
    /// How clients spread over several targets.
    pub spread: Spread,
    pub connect_timeout: Duration,
    pub server: ServerConfig,
    /// Whether the file had a `[server]` table (ignored when a target is set).
    pub has_server_table: bool,
    /// The embedded server's data directory is a temporary one: create it
    /// before the run, remove it after.
    pub temporary_data: bool,
    pub phases: Vec<Phase>,
    pub groups: Vec<Group>,
    pub thresholds: Vec<Threshold>,
    /// What the command line changed, as written (`--duration 3s`, `--set ramp_up=1s`).
    pub overrides: Vec<String>,
    /// Data files script templates read lines from.
    pub data: Vec<DataSet>,
}

/// How clients spread over several targets (`spread = "..."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Spread {
    /// Client i (counted over every group, in order) connects to target
    /// i mod n: each target gets an equal share of every group.
    #[default]
    RoundRobin,
    /// Group g connects to target g mod n: each group on one target (a
    /// group's own `target = N` decides for it in either mode).
    Group,
}

impl Spread {
    pub fn as_str(self) -> &'static str {
        match self {
            Spread::RoundRobin => "round-robin",
            Spread::Group => "group",
        }
    }
}

/// Changes to a scenario from the command line, without editing the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// The total length of the steady phases (several are scaled together).
    pub duration: Option<Duration>,
    /// Every group's rate times this.
    pub rate_multiplier: Option<f64>,
    /// Every group's client count times this (at least 1 each).
    pub clients_multiplier: Option<f64>,
    pub seed: Option<u64>,
    /// `key=value` with a dotted key (`ramp_up`, `server.history`, `group.0.rate`), value in TOML.
    pub set: Vec<String>,
}

impl Overrides {
    /// The overrides as written on the command line, for the report.
    fn describe(&self) -> Vec<String> {
        let mut out: Vec<String> = self.set.iter().map(|s| format!("--set {s}")).collect();
        if let Some(d) = self.duration {
            out.push(format!("--duration {}", crate::units::format_duration(d)));
        }
        if let Some(f) = self.rate_multiplier {
            out.push(format!("--rate-multiplier {f}"));
        }
        if let Some(f) = self.clients_multiplier {
            out.push(format!("--clients-multiplier {f}"));
        }
        if let Some(seed) = self.seed {
            out.push(format!("--seed {seed}"));
        }
        out
    }
}

/// `text` with each `key=value` of `sets` written into it (a TOML document).
fn apply_sets(text: &str, file: &str, sets: &[String]) -> Result<String, ScenarioError> {
    if sets.is_empty() {
        return Ok(text.to_string());
    }
    let bad = |message: String| ScenarioError::Parse { file: file.to_string(), message };
    let mut doc: toml::Table = toml::from_str(text).map_err(|err| bad(toml_error(text, &err)))?;
    for set in sets {
        let usage = || bad(format!("--set {set:?}: write key=value, e.g. --set ramp_up=1s or --set group.0.rate=2"));
        let (key, value) = set.split_once('=').ok_or_else(usage)?;
        let value = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
            Ok(mut table) => table.remove("v").ok_or_else(usage)?,
            Err(_) => toml::Value::String(value.trim().to_string()),
        };
        set_path(&mut doc, key.trim(), value).map_err(|why| bad(format!("--set {set:?}: {why}")))?;
    }
    toml::to_string(&doc).map_err(|err| bad(err.to_string()))
}

/// Write `value` at a dotted path; `group.0` (or `group[0]`) is the first `[[group]]`.
fn set_path(doc: &mut toml::Table, key: &str, value: toml::Value) -> Result<(), String> {
    let parts: Vec<&str> = key.split(['.', '[', ']']).filter(|p| !p.is_empty()).collect();
    let Some((last, path)) = parts.split_last() else { return Err("the key is empty".into()) };
    let mut table = doc;
    let mut iter = path.iter().peekable();
    while let Some(part) = iter.next() {
        let entry = table.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            toml::Value::Array(items) => {
                let count = items.len();
                let index = iter.next().and_then(|i| i.parse::<usize>().ok());
                match index.and_then(|i| items.get_mut(i)) {
                    Some(toml::Value::Table(t)) => t,
                    _ => {
                        return Err(format!(
                            "{part} has {count} entries: name one as {part}.0 to {part}.{}",
                            count.max(1) - 1
                        ));
                    }
                }
            }
            _ => return Err(format!("{part} is not a table")),
        };
    }
    table.insert(last.to_string(), value);
    Ok(())
}

impl Scenario {
    /// Read and validate a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        Scenario::load_with(path, &Overrides::default())
    }

    /// Read a scenario file, apply command-line overrides, validate.
    pub fn load_with(path: &Path, overrides: &Overrides) -> Result<Scenario, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ScenarioError::Read { file: file.clone(), error })?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("scenario");
        let text = apply_sets(&text, &file, &overrides.set)?;
        let mut scenario = Scenario::parse(&text, &file, stem)?;
        scenario.apply(overrides)?;
        Ok(scenario)
    }

    /// Apply the typed overrides (`--set` is applied to the text before validation).
    pub fn apply(&mut self, overrides: &Overrides) -> Result<(), ScenarioError> {
        let file = self.file.clone();
        let invalid =
            |key: &str, message: String| ScenarioError::Invalid { file: file.clone(), key: key.to_string(), message };
        let factors =
            [("--rate-multiplier", overrides.rate_multiplier), ("--clients-multiplier", overrides.clients_multiplier)];
        for (flag, factor) in factors {
            if let Some(f) = factor
                && !(f.is_finite() && (0.0..=1e6).contains(&f))
            {
                return Err(invalid(flag, format!("must be a number from 0 to 1000000 (got {f})")));
            }
        }
        if let Some(total) = overrides.duration {
            if total.is_zero() {
                return Err(invalid("--duration", "must be more than 0".into()));
            }
            let steady = self.steady_duration().as_secs_f64().max(1e-9);
            for phase in &mut self.phases {
                if let Phase::Steady(p) = phase {
                    p.duration = total.mul_f64(p.duration.as_secs_f64() / steady);
                }
            }
        }
        for group in &mut self.groups {
            group.rate *= overrides.rate_multiplier.unwrap_or(1.0);
            let clients = group.clients as f64 * overrides.clients_multiplier.unwrap_or(1.0);
            group.clients = (clients.round() as usize).max(1);
        }
        if let Some(seed) = overrides.seed {
            self.seed = seed;
        }
        self.overrides = overrides.describe();
        Ok(())
    }

    /// The total length of the steady phases.
    pub fn steady_duration(&self) -> Duration {
        self.phases.iter().filter(|p| matches!(p, Phase::Steady(_))).map(Phase::duration).sum()
    }

    /// Validate scenario text; `file` names it in errors, `default_name` is used without a `name` key.
    pub fn parse(text: &str, file: &str, default_name: &str) -> Result<Scenario, ScenarioError> {
        let parse_error = |message: String| ScenarioError::Parse { file: file.to_string(), message };
        let deserializer = toml::Deserializer::parse(text).map_err(|err| parse_error(toml_error(text, &err)))?;
        // The key's path (`server.max_queue_bytes`) before toml's own message
        // with the line and column.
        let raw: RawScenario = serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let path = err.path().to_string();
            let message = err.inner().message().trim();
            let message = unknown_key(&path, message)
                .or_else(|| wrong_type(&path, message))
                .unwrap_or_else(|| message.to_string());
            let inner = located(text, err.inner(), &message);
            parse_error(if path == "." { inner } else { format!("{path}: {inner}") })
        })?;
        Validator { file }.scenario(raw, default_name)
    }

    /// Total run time, all phases included.
    pub fn total_duration(&self) -> Duration {
        self.phases.iter().map(Phase::duration).sum()
    }

    /// Every room a client may be in: the groups' rooms and those scripts join by name.
    pub fn rooms(&self) -> Vec<String> {
        let mut rooms: Vec<String> = self.groups.iter().flat_map(|g| g.rooms.iter().cloned()).collect();
        for script in self.groups.iter().filter_map(|g| g.script.as_ref()) {
            rooms.extend(script.literal_rooms().filter_map(|room| crate::names::room(room).ok()));
        }
        rooms.sort();
        rooms.dedup();
        rooms
    }

    pub fn total_clients(&self) -> usize {
        self.groups.iter().map(|g| g.clients).sum()
    }
}

impl script::Values for Validator<'_> {
    fn duration(&self, key: &str, value: &DurationValue) -> Result<Duration, script::StepError> {
        Validator::duration(self, key, value).map_err(split)
    }

    fn size_range(
        &self,
        key: &str,
        value: &SizeValue,
        min: usize,
        max: usize,
    ) -> Result<Range<usize>, script::StepError> {
        self.size_within(key, value, min, max).map_err(split)
    }
}

/// A validation error back as (key, message), for the script validator.
fn split(err: ScenarioError) -> script::StepError {
    match err {
        ScenarioError::Invalid { key, message, .. } => (key, message),
        other => (String::new(), other.to_string()),
    }
}

/// A TOML error on one line: `line L, column C: message` (toml's own
/// rendering spans several lines, with a snippet, which an error line
/// cannot show).
fn toml_error(text: &str, err: &toml::de::Error) -> String {
    located(text, err, err.message().trim())
}

/// `message` after the line and column `err` points at.
fn located(text: &str, err: &toml::de::Error, message: &str) -> String {
    let Some(before) = err.span().and_then(|span| text.get(..span.start)) else {
        return message.to_string();
    };
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}: {message}")
}

/// serde's "unknown field `X`, expected one of `a`, `b`" for the key at
/// `path`, said with the fix: the nearest known key when one is a typo away,
/// and for a script step which keys are actions and which go with one.
fn unknown_key(path: &str, message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, expected) = rest.split_once("`, expected ")?;
    let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let nearest = known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(key, k), *k))
        .filter(|(distance, k)| *distance <= 2 && *distance < k.len())
        .min()
        .map(|(_, k)| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default();
    let in_step = path.rsplit_once('.').is_some_and(|(step, _)| step.ends_with(']') && step.contains("script["));
    Some(if in_step {
        format!(
            "unknown step key `{key}`{nearest}: a step is one action ({}) with its options (`name` with file, \
             `timeout` and `check` with wait_for, `do` with loop)",
            script::ACTIONS
        )
    } else {
        let list: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
        format!("unknown key `{key}`{nearest}; the keys here are {}", list.join(", "))
    })
}

/// serde's "invalid type: string \"2\", expected i64" and "data did not
/// match any variant of untagged enum SizeValue", said in the scenario's
/// terms with the fix.
fn wrong_type(path: &str, message: &str) -> Option<String> {
    if let Some(name) = message.strip_prefix("data did not match any variant of untagged enum ") {
        let shape = match name.trim() {
            "DurationValue" => "a duration: \"30s\", \"500ms\", \"2m\", or a number of seconds",
            "DurationRange" => "a duration (\"2s\") or a [min, max] range of them ([\"1s\", \"5s\"])",
            "SizeValue" => "a size: a number of bytes, \"4KiB\", or a [min, max] range of them",
            "OneSize" => "a size: a number of bytes or \"4KiB\"",
            "ScaleValue" => "a rate multiplier (1.5) or a [start, end] ramp of them ([1.0, 3.0])",
            _ => return None,
        };
        return Some(format!("must be {shape}"));
    }
    let rest = message.strip_prefix("invalid type: ")?;
    let (got, expected) = rest.rsplit_once(", expected ")?;
    let wanted = match expected.trim() {
        "i64" | "u64" | "u32" | "u16" | "usize" | "an integer" => "a whole number",
        "f64" | "a float" => "a number",
        "a string" => "a string in quotes",
        "a boolean" => "true or false",
        "a sequence" => "a list in [brackets]",
        other => other,
    };
    let got = got.replace('`', "");
    let fix = if got.starts_with("string ") && matches!(wanted, "a whole number" | "a number") {
        ": write it without quotes".to_string()
    } else if let Some(key) = path.strip_prefix("thresholds.")
        && wanted == "a string in quotes"
    {
        // The number written is the likely limit; anything else gets a placeholder.
        let limit = got.rsplit(' ').next().filter(|n| n.parse::<f64>().is_ok()).unwrap_or("N");
        format!(": a threshold is a condition in quotes, like \"{key}\" = \">= {limit}\"")
    } else {
        String::new()
    };
    Some(format!("must be {wanted}, not the {got}{fix}"))
}

/// Turns a `RawScenario` into a `Scenario`, naming the file in every error.
struct Validator<'a> {
    file: &'a str,
}

impl Validator<'_> {
    fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> ScenarioError {
        ScenarioError::Invalid { file: self.file.to_string(), key: key.into(), message: message.into() }
    }

    fn duration(&self, key: &str, value: &DurationValue) -> Result<Duration, ScenarioError> {
        match value {
            DurationValue::Text(text) => parse_duration(text).map_err(|why| self.invalid(key, why)),
            // The same bound as the text form (at most 1e9 s, about 31 years).
            DurationValue::Seconds(secs) if (0.0..=1e9).contains(secs) => Ok(Duration::from_secs_f64(*secs)),
            DurationValue::Seconds(secs) => {
                Err(self.invalid(key, format!("must be a duration from 0 to 1e9 seconds (got {secs})")))
            }
        }
    }

    fn size(&self, key: &str, value: &OneSize) -> Result<usize, ScenarioError> {
        match value {
            OneSize::Bytes(n) if *n >= 0 => Ok(*n as usize),
            OneSize::Bytes(n) => Err(self.invalid(key, format!("must be a size >= 0 (got {n})"))),
            OneSize::Text(text) => parse_size(text).map_err(|why| self.invalid(key, why)),
        }
    }

    fn size_range(&self, key: &str, value: &SizeValue, min_allowed: usize) -> Result<Range<usize>, ScenarioError> {
        self.size_within(key, value, min_allowed, 16 << 20)
    }

    fn size_within(
        &self,
        key: &str,
        value: &SizeValue,
        min_allowed: usize,
        max_allowed: usize,
    ) -> Result<Range<usize>, ScenarioError> {
        let range = match value {
            SizeValue::One(one) => {
                let n = self.size(key, one)?;
                Range { min: n, max: n }
            }
            SizeValue::Range([a, b]) => Range { min: self.size(key, a)?, max: self.size(key, b)? },
        };
        if range.min > range.max {
            return Err(self.invalid(key, format!("[min, max] needs min <= max (got [{}, {}])", range.min, range.max)));
        }
        if range.min < min_allowed {
            return Err(self.invalid(key, format!("must be at least {min_allowed} bytes (got {})", range.min)));
        }
        if range.max > max_allowed {
            let limit = crate::units::format_bytes(max_allowed as f64);
            return Err(self.invalid(key, format!("must be at most {limit} (got {})", range.max)));
        }
        Ok(range)
    }

    /// The `[data.NAME]` files, read relative to the scenario's folder.
    fn data(&self, raw: &BTreeMap<String, RawData>) -> Result<Vec<DataSet>, ScenarioError> {
        let base = Path::new(self.file).parent().unwrap_or(Path::new(""));
        raw.iter()
            .map(|(name, data)| {
                let key = format!("data.{name}");
                let pick = match data.pick.as_deref() {
                    None | Some("order") => Pick::Order,
                    Some("random") => Pick::Random,
                    Some(other) => {
                        return Err(self.invalid(
                            format!("{key}.pick"),
                            format!("must be \"order\" or \"random\" (got {other:?})"),
                        ));
                    }
                };
                let path = base.join(&data.file);
                let text = std::fs::read_to_string(&path).map_err(|err| {
                    self.invalid(
                        format!("{key}.file"),
                        format!(
                            "cannot be read ({}: {err}); the path is relative to the scenario file",
                            path.display()
                        ),
                    )
                })?;
                let lines: Vec<String> =
                    text.lines().map(str::trim_end).filter(|l| !l.trim().is_empty()).map(String::from).collect();
                if lines.is_empty() {
                    return Err(self.invalid(format!("{key}.file"), format!("{} has no line of text", path.display())));
                }
                if let Some((i, long)) = lines.iter().enumerate().find(|(_, l)| l.len() > 4096) {
                    return Err(self.invalid(
                        format!("{key}.file"),
                        format!("{} line {} has {} bytes: at most 4096 a line", path.display(), i + 1, long.len()),
                    ));
                }
                Ok(DataSet { name: name.clone(), lines, pick })
            })
            .collect()
    }

    fn scenario(&self, raw: RawScenario, default_name: &str) -> Result<Scenario, ScenarioError> {
        let name = self.name(&raw, default_name)?;
        let protocol = match raw.protocol.as_deref() {
            None => Protocol::Chorus,
            Some(name) => Protocol::from_name(name).ok_or_else(|| {
                self.invalid("protocol", format!("must be \"chorus\", \"chorus-plain\" or \"raw\" (got {name:?})"))
            })?,
        };
        let targets = self.targets(&raw)?;
        let spread = match raw.spread.as_deref() {
            None | Some("round-robin") => Spread::RoundRobin,
            Some("group") => Spread::Group,
            Some(other) => {
                return Err(self.invalid("spread", format!("must be \"round-robin\" or \"group\" (got {other:?})")));
            }
        };
        let phases = self.phases(&raw)?;
        let data = self.data(&raw.data)?;
        let groups = self.groups(&raw, protocol, &data, &targets)?;
        let thresholds = self.thresholds(&raw, protocol, &groups)?;
        let connect_timeout = match &raw.connect_timeout {
            Some(value) => self.duration("connect_timeout", value)?,
            None => Duration::from_secs(10),
        };
        let has_server_table = raw.server.is_some();
        let (server, temporary_data) = self.server(&raw.server.unwrap_or_default())?;
        Ok(Scenario {
            name,
            description: raw.description.clone().unwrap_or_default(),
            file: self.file.to_string(),
            seed: raw.seed.unwrap_or(1),
            protocol,
            targets,
            spread,
            connect_timeout,
            server,
            has_server_table,
            temporary_data,
            phases,
            groups,
            thresholds,
            overrides: Vec::new(),
            data,
        })
    }

    /// The scenario's name: the file's unless it says otherwise.
    fn name(&self, raw: &RawScenario, default_name: &str) -> Result<String, ScenarioError> {
        let name = raw.name.clone().unwrap_or_else(|| default_name.to_string());
        if name.is_empty()
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            || name.len() > 64
        {
            return Err(self.invalid(
                "name",
                format!("must be 1-64 letters, digits, '-', '_' or '.' (it names the results folder); got {name:?}"),
            ));
        }
        Ok(name)
    }

    /// The `[[group]]`s: at least one, each name once, each target in the list.
    fn groups(
        &self,
        raw: &RawScenario,
        protocol: Protocol,
        data: &[DataSet],
        targets: &[String],
    ) -> Result<Vec<Group>, ScenarioError> {
        if raw.groups.is_empty() {
            return Err(self.invalid("group", "is missing: add at least one [[group]] with clients = N"));
        }
        let groups = raw
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| self.group(i, g, protocol, data))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, group) in groups.iter().enumerate() {
            if groups[..i].iter().any(|g| g.name == group.name) {
                return Err(self.invalid(format!("group[{i}].name"), format!("{:?} is used twice", group.name)));
            }
        }
        for (i, group) in groups.iter().enumerate() {
            if let Some(n) = group.target
                && !targets.is_empty()
                && n >= targets.len()
            {
                return Err(self.invalid(
                    format!("group[{i}].target"),
                    format!("is target {} of a list of {}", n + 1, targets.len()),
                ));
            }
        }
        let total: usize = groups.iter().map(|g| g.clients).sum();
        if total > 1_000_000 {
            let key = if groups.len() == 1 { "group[0].clients" } else { "group[*].clients" };
            return Err(self.invalid(key, format!("add up to {total}: a run has at most 1,000,000 clients in all")));
        }
        self.no_look_alike_rooms(&groups)?;
        Ok(groups)
    }

    /// Two rooms the server takes for one (the same case-folded TR39
    /// confusable skeleton, `names::key`) would see the second refused at
    /// run time: refused here, naming both.
    fn no_look_alike_rooms(&self, groups: &[Group]) -> Result<(), ScenarioError> {
        let mut seen: BTreeMap<String, (String, String)> = BTreeMap::new();
        for (i, group) in groups.iter().enumerate() {
            let scripted = group.script.iter().flat_map(|s| s.literal_rooms().map(str::to_string));
            let rooms = group.rooms.iter().cloned().map(|r| (format!("group[{i}].rooms"), r));
            for (key, room) in rooms.chain(scripted.map(|r| (format!("group[{i}].script"), r))) {
                let alike = crate::names::key(&room);
                match seen.get(&alike) {
                    Some((first_key, first)) if *first != room => {
                        return Err(self.invalid(
                            key,
                            format!(
                                "has room {room:?}, which looks like {first:?} ({first_key}) to the server \
                                 (case and Unicode look-alikes are one name, Unicode TR39): it would refuse \
                                 the second; use one spelling"
                            ),
                        ));
                    }
                    Some(_) => {}
                    None => {
                        seen.insert(alike, (key, room));
                    }
                }
            }
        }
        Ok(())
    }

    /// The `[thresholds]`, each for a quantity this protocol and these groups have.
    fn thresholds(
        &self,
        raw: &RawScenario,
        protocol: Protocol,
        groups: &[Group],
    ) -> Result<Vec<Threshold>, ScenarioError> {
        let group_names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        let mut thresholds = Vec::new();
        for (key, condition) in &raw.thresholds {
            let threshold = Threshold::parse(key, condition, protocol, &group_names)
                .map_err(|why| self.invalid(format!("thresholds.\"{key}\""), why))?;
            thresholds.push(threshold);
        }
        Ok(thresholds)
    }

    /// `target = "ws://..."` or `targets = ["ws://...", ...]`: URLs, each once.
    fn targets(&self, raw: &RawScenario) -> Result<Vec<String>, ScenarioError> {
        let (key, targets) = match (&raw.target, &raw.targets) {
            (Some(_), Some(_)) => {
                return Err(self.invalid("targets", "use target = \"ws://...\" or targets = [...], not both"));
            }
            (Some(one), None) => ("target", vec![one.clone()]),
            (None, Some(list)) if list.is_empty() => {
                return Err(self.invalid("targets", "must list at least one ws:// or wss:// URL"));
            }
            (None, Some(list)) => ("targets", list.clone()),
            (None, None) => return Ok(Vec::new()),
        };
        for (i, target) in targets.iter().enumerate() {
            if !(target.starts_with("ws://") || target.starts_with("wss://")) {
                return Err(self.invalid(key, format!("must be a ws:// or wss:// URL (got {target:?})")));
            }
            if targets[..i].contains(target) {
                return Err(self.invalid(key, format!("lists {target:?} twice")));
            }
        }
        Ok(targets)
    }

    fn phases(&self, raw: &RawScenario) -> Result<Vec<Phase>, ScenarioError> {
        if !raw.phases.is_empty() {
            if raw.duration.is_some() || raw.ramp_up.is_some() || raw.drain.is_some() {
                return Err(
                    self.invalid("phase", "use either duration / ramp_up / drain or [[phase]] entries, not both")
                );
            }
            let phases = raw.phases.iter().enumerate().map(|(i, p)| self.phase(i, p)).collect::<Result<Vec<_>, _>>()?;
            for (i, phase) in phases.iter().enumerate() {
                match phase {
                    Phase::Ramp(_) if i != 0 => {
                        return Err(self.invalid(format!("phase[{i}].type"), "a ramp can only be the first phase"));
                    }
                    Phase::Drain(_) if i != phases.len() - 1 => {
                        return Err(self.invalid(format!("phase[{i}].type"), "a drain can only be the last phase"));
                    }
                    _ => {}
                }
            }
            if !phases.iter().any(|p| matches!(p, Phase::Steady(_))) {
                return Err(self.invalid("phase", "needs at least one phase of type = \"steady\""));
            }
            return Ok(phases);
        }
        let Some(duration) = &raw.duration else {
            return Err(self.invalid("duration", "is missing: say how long to send, e.g. duration = \"10s\""));
        };
        let duration = self.duration("duration", duration)?;
        if duration.is_zero() {
            return Err(self.invalid("duration", "must be more than 0"));
        }
        let mut phases = Vec::new();
        if let Some(ramp) = &raw.ramp_up {
            let ramp = self.duration("ramp_up", ramp)?;
            if !ramp.is_zero() {
                phases.push(Phase::Ramp(Ramp { duration: ramp, rate: (0.0, 0.0) }));
            }
        }
        phases.push(Phase::Steady(Steady { name: "steady".into(), duration, rate: (1.0, 1.0) }));
        let drain = match &raw.drain {
            Some(drain) => self.duration("drain", drain)?,
            None => Duration::from_secs(2),
        };
        phases.push(Phase::Drain(Drain { duration: drain }));
        Ok(phases)
    }

    fn phase(&self, i: usize, raw: &RawPhase) -> Result<Phase, ScenarioError> {
        let key = |field: &str| format!("phase[{i}].{field}");
        let Some(duration) = &raw.duration else {
            return Err(self.invalid(key("duration"), "is missing, e.g. duration = \"30s\""));
        };
        let duration = self.duration(&key("duration"), duration)?;
        let rate = match &raw.rate {
            None => None,
            Some(ScaleValue::One(r)) => Some((*r, *r)),
            Some(ScaleValue::Ramp([a, b])) => Some((*a, *b)),
        };
        if let Some((a, b)) = rate
            && !(a.is_finite() && b.is_finite() && a >= 0.0 && b >= 0.0)
        {
            return Err(self.invalid(key("rate"), format!("must be a multiplier >= 0 (got [{a}, {b}])")));
        }
        match raw.kind.as_deref() {
            Some("ramp") => Ok(Phase::Ramp(Ramp { duration, rate: rate.unwrap_or((0.0, 0.0)) })),
            Some("steady") | None => Ok(Phase::Steady(Steady {
                name: raw.name.clone().unwrap_or_else(|| format!("steady{}", i + 1)),
                duration,
                rate: rate.unwrap_or((1.0, 1.0)),
            })),
            Some("drain") if rate.is_some() => Err(self.invalid(key("rate"), "a drain phase sends nothing")),
            Some("drain") => Ok(Phase::Drain(Drain { duration })),
            Some(other) => {
                Err(self.invalid(key("type"), format!("must be \"ramp\", \"steady\" or \"drain\" (got {other:?})")))
            }
        }
    }

    fn group(&self, i: usize, raw: &RawGroup, protocol: Protocol, data: &[DataSet]) -> Result<Group, ScenarioError> {
        let key = |field: &str| format!("group[{i}].{field}");
        let name = raw.name.clone().unwrap_or_else(|| format!("group{}", i + 1));
        if name.is_empty() || name.contains(char::is_whitespace) || name.contains('.') {
            return Err(self.invalid(key("name"), format!("must be non-empty, without spaces or dots (got {name:?})")));
        }
        let clients = match raw.clients {
            None => return Err(self.invalid(key("clients"), "is missing: how many clients in this group?")),
            Some(n) if n < 1 => return Err(self.invalid(key("clients"), format!("must be >= 1 (got {n})"))),
            Some(n) => n as usize,
        };
        let rooms = self.rooms(&key("rooms"), raw, protocol)?;
        let script = match &raw.script {
            None => None,
            Some(steps) => {
                let cx = script::Context { key: key("script"), protocol, data };
                Some(script::validate(steps, &cx, self).map_err(|(key, why)| self.invalid(key, why))?)
            }
        };
        // A scripted group sends what its script says, unless given a rate too.
        let rate = raw.rate.unwrap_or(if script.is_some() { 0.0 } else { 1.0 });
        if !rate.is_finite() || rate < 0.0 {
            return Err(self.invalid(key("rate"), format!("must be >= 0 (got {rate})")));
        }
        let arrival = self.arrival(&key("arrival"), raw.arrival.as_deref())?;
        let think_time = self.think_time(&key("think_time"), raw.think_time.as_ref())?;
        if raw.think_time.is_some() && arrival != Arrival::Closed {
            return Err(self.invalid(key("think_time"), "only applies to arrival = \"closed\""));
        }
        let mix = self.mix(&key("mix"), raw.mix.as_ref(), protocol, rate)?;
        let file_size = match &raw.file_size {
            Some(size) => self.size_within(&key("file_size"), size, BINARY_STAMP_LEN, script::MAX_FILE_SIZE)?,
            None => Range { min: 64 << 10, max: 64 << 10 },
        };
        if raw.file_size.is_some() && mix.file == 0 {
            return Err(
                self.invalid(key("file_size"), "sizes the mix's files: add file = N to mix (or remove file_size)")
            );
        }
        if script.is_some() && raw.churn.is_some() {
            return Err(self.invalid(
                key("churn"),
                "does not go with a script: script { leave = true } and { connect = true } instead",
            ));
        }
        let text_min = if protocol.stamps_text() { TEXT_STAMP_MAX_LEN } else { 1 };
        let text_size = match &raw.text_size {
            Some(size) => self.size_range(&key("text_size"), size, text_min)?,
            None => Range { min: 32.max(text_min), max: 32.max(text_min) },
        };
        let binary_size = match &raw.binary_size {
            Some(size) => self.size_range(&key("binary_size"), size, BINARY_STAMP_LEN)?,
            None => Range { min: 64, max: 64 },
        };
        let churn = self.churn(&key("churn"), raw.churn.as_ref())?;
        let (stop_reading_after, resume_reading_after) = self.stall(raw, key)?;
        let recv_buffer = self.recv_buffer(&key("recv_buffer"), raw.recv_buffer.as_ref())?;
        let target = self.group_target(&key("target"), raw.target)?;
        Ok(Group {
            file_size,
            script,
            name,
            clients,
            rooms,
            rate,
            arrival,
            think_time,
            mix,
            text_size,
            binary_size,
            churn,
            stop_reading_after,
            resume_reading_after,
            recv_buffer,
            target,
        })
    }

    /// `room = "x"` or `rooms = [...]`, in the form the server uses.
    fn rooms(&self, key: &str, raw: &RawGroup, protocol: Protocol) -> Result<Vec<String>, ScenarioError> {
        let rooms = match (&raw.room, &raw.rooms) {
            (Some(_), Some(_)) => return Err(self.invalid(key, "use room = \"x\" or rooms = [...], not both")),
            (Some(room), None) => vec![room.clone()],
            (None, Some(rooms)) if rooms.is_empty() => {
                return Err(self.invalid(key, "must list at least one room"));
            }
            (None, Some(rooms)) => rooms.clone(),
            (None, None) => vec![crate::protocol::DEFAULT_ROOM.to_string()],
        };
        // Rooms in the form the server uses (NFKC), so events match them.
        let group = key.strip_suffix(".rooms").unwrap_or(key);
        let rooms = rooms
            .iter()
            .enumerate()
            .map(|(i, room)| {
                crate::names::room(room).map_err(|why| {
                    let at = if raw.room.is_some() { format!("{group}.room") } else { format!("{group}.rooms[{i}]") };
                    self.invalid(at, format!("{room:?} is not a room name the server accepts: {why}"))
                })
            })
            .collect::<Result<Vec<String>, ScenarioError>>()?;
        if protocol == Protocol::Raw && rooms.len() > 1 {
            return Err(self.invalid(key, "raw servers have no rooms: use one room (or none)"));
        }
        Ok(rooms)
    }

    fn arrival(&self, key: &str, raw: Option<&str>) -> Result<Arrival, ScenarioError> {
        match raw {
            None | Some("poisson") => Ok(Arrival::Poisson),
            Some("uniform") => Ok(Arrival::Uniform),
            Some("closed") => Ok(Arrival::Closed),
            Some(other) => {
                Err(self.invalid(key, format!("must be \"poisson\", \"uniform\" or \"closed\" (got {other:?})")))
            }
        }
    }

    /// A pause or a `[min, max]` range of them (none: no pause).
    fn think_time(&self, key: &str, raw: Option<&DurationRange>) -> Result<Range<Duration>, ScenarioError> {
        match raw {
            None => Ok(Range { min: Duration::ZERO, max: Duration::ZERO }),
            Some(DurationRange::One(d)) => {
                let d = self.duration(key, d)?;
                Ok(Range { min: d, max: d })
            }
            Some(DurationRange::Range([a, b])) => {
                let range = Range { min: self.duration(key, a)?, max: self.duration(key, b)? };
                if range.min > range.max {
                    return Err(self.invalid(key, "[min, max] needs min <= max"));
                }
                Ok(range)
            }
        }
    }

    fn churn(&self, key: &str, raw: Option<&RawChurn>) -> Result<Option<Churn>, ScenarioError> {
        let Some(churn) = raw else { return Ok(None) };
        let every = self.duration(&format!("{key}.every"), &churn.every)?;
        if every < Duration::from_millis(10) {
            return Err(self.invalid(format!("{key}.every"), "must be at least 10ms"));
        }
        let downtime = match &churn.downtime {
            Some(d) => self.duration(&format!("{key}.downtime"), d)?,
            None => Duration::from_millis(100),
        };
        Ok(Some(Churn { every, downtime }))
    }

    /// `stop_reading_after` and `resume_reading_after`: when a group's
    /// clients stop reading, and when they read again.
    fn stall(
        &self,
        raw: &RawGroup,
        key: impl Fn(&str) -> String,
    ) -> Result<(Option<Duration>, Option<Duration>), ScenarioError> {
        let stop_reading_after = match &raw.stop_reading_after {
            Some(d) => Some(self.duration(&key("stop_reading_after"), d)?),
            None => None,
        };
        let resume_reading_after = match (&raw.resume_reading_after, stop_reading_after) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(self.invalid(key("resume_reading_after"), "needs stop_reading_after (a stall has a start)"));
            }
            (Some(d), Some(stop)) => {
                let resume = self.duration(&key("resume_reading_after"), d)?;
                if resume <= stop {
                    return Err(self.invalid(key("resume_reading_after"), "must be later than stop_reading_after"));
                }
                Some(resume)
            }
        };
        Ok((stop_reading_after, resume_reading_after))
    }

    fn recv_buffer(&self, key: &str, raw: Option<&OneSize>) -> Result<Option<u32>, ScenarioError> {
        let Some(size) = raw else { return Ok(None) };
        let bytes = self.size(key, size)?;
        if !(1024..=64 << 20).contains(&bytes) {
            return Err(self.invalid(key, format!("must be from 1KiB to 64MiB (got {bytes})")));
        }
        Ok(Some(bytes as u32))
    }

    /// A group's `target = N`, 1-based, as an index.
    fn group_target(&self, key: &str, raw: Option<i64>) -> Result<Option<usize>, ScenarioError> {
        match raw {
            None => Ok(None),
            Some(n) if n >= 1 => Ok(Some((n - 1) as usize)),
            Some(n) => Err(self.invalid(key, format!("is a 1-based index into targets (got {n})"))),
        }
    }

    fn mix(&self, key: &str, raw: Option<&RawMix>, protocol: Protocol, rate: f64) -> Result<Mix, ScenarioError> {
        let Some(raw) = raw else { return Ok(Mix { text: 1, binary: 0, rename: 0, file: 0 }) };
        if rate == 0.0 {
            return Err(self.invalid(
                key,
                "shapes the messages sent at `rate`, and rate is 0 (a scripted group's default): \
                 set rate = N to send a mix, or remove mix",
            ));
        }
        let weight = |field: &str, value: Option<i64>| -> Result<u32, ScenarioError> {
            match value {
                None => Ok(0),
                Some(w) if (0..=1_000_000).contains(&w) => Ok(w as u32),
                Some(w) => {
                    Err(self.invalid(format!("{key}.{field}"), format!("must be a weight from 0 to 1000000 (got {w})")))
                }
            }
        };
        let mix = Mix {
            text: weight("text", raw.text)?,
            binary: weight("binary", raw.binary)?,
            rename: weight("rename", raw.rename)?,
            file: weight("file", raw.file)?,
        };
        if mix.total() == 0 && rate > 0.0 {
            return Err(self.invalid(key, "needs at least one weight above 0 (or set rate = 0 for listeners)"));
        }
        if protocol == Protocol::Raw && mix.rename > 0 {
            return Err(self.invalid(format!("{key}.rename"), "raw servers have no renames: set it to 0"));
        }
        if protocol == Protocol::Raw && mix.file > 0 {
            return Err(self.invalid(format!("{key}.file"), "raw servers have no file uploads: set it to 0"));
        }
        Ok(mix)
    }

    /// The embedded server's configuration (the harness profile's defaults
    /// for what the table leaves out), and whether its data directory is a
    /// temporary one.
    fn server(&self, settings: &ServerSettings) -> Result<(ServerConfig, bool), ScenarioError> {
        settings.resolve(Profile::Harness).map_err(|err| self.invalid(format!("server.{}", err.key), err.why))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn toml_errors_under_set_are_one_line_with_their_place() {
        let err = super::apply_sets("seed = 1\nname = \"x\n", "f.toml", &["seed=2".into()]).unwrap_err().to_string();
        assert!(err.starts_with("scenario f.toml: line 2, column 10:"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
}
