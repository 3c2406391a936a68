//! Scenario files: parsing, defaults, and every validation error (no sockets).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chorus::harness::scenario::{Arrival, Phase, Protocol, Scenario};

fn parse(text: &str) -> Result<Scenario, String> {
    Scenario::parse(text, "test.toml", "test").map_err(|e| e.to_string())
}

const MINIMAL: &str = "duration = \"5s\"\n[[group]]\nclients = 3\n";

#[test]
fn the_issue_example_parses_with_every_key() {
    let scenario = parse(
        r#"
name = "smoke"
description = "one line on what this scenario shows"
seed = 1
duration = "10s"
ramp_up = "2s"
drain = "2s"
protocol = "chorus"

[server]

[[group]]
name = "talkers"
clients = 50
room = "lobby"
rate = 5.0
arrival = "poisson"
mix = { text = 90, binary = 8, rename = 2 }
text_size = [16, 256]
binary_size = 1024

[thresholds]
"delivery.p99" = "< 50ms"
"ack.p99" = "< 20ms"
"connect.p99" = "< 100ms"
"delivery.ratio" = ">= 1.0"
"errors" = "== 0"
"#,
    )
    .unwrap();
    assert_eq!(scenario.name, "smoke");
    assert_eq!(scenario.protocol, Protocol::Chorus);
    assert_eq!(scenario.total_duration(), Duration::from_secs(14));
    assert!(matches!(scenario.phases[0], Phase::Ramp(_)));
    let group = &scenario.groups[0];
    assert_eq!((group.clients, group.rate, group.arrival), (50, 5.0, Arrival::Poisson));
    assert_eq!((group.mix.text, group.mix.binary, group.mix.rename), (90, 8, 2));
    assert_eq!((group.text_size.min, group.text_size.max), (16, 256));
    assert_eq!(group.binary_size.max, 1024);
    assert_eq!(scenario.thresholds.len(), 5);
    assert!(scenario.targets.is_empty());
}

#[test]
fn defaults_fill_what_is_left_out() {
    let scenario = parse(MINIMAL).unwrap();
    assert_eq!(scenario.name, "test", "the file name");
    assert_eq!(scenario.seed, 1);
    assert_eq!(scenario.groups[0].rooms, ["lobby"]);
    assert_eq!(scenario.groups[0].rate, 1.0);
    assert_eq!(scenario.phases.len(), 2, "steady + the default 2s drain");
    assert_eq!(scenario.total_duration(), Duration::from_secs(7));
}

#[test]
fn explicit_phases_with_rate_ramps() {
    let scenario = parse(
        r#"
[[phase]]
type = "ramp"
duration = "3s"
[[phase]]
name = "warm"
duration = "10s"
rate = 0.5
[[phase]]
name = "climb"
duration = "20s"
rate = [1.0, 4.0]
[[phase]]
type = "drain"
duration = "2s"
[[group]]
clients = 10
rooms = ["a", "b"]
arrival = "uniform"
churn = { every = "5s", downtime = "1s" }
[[group]]
name = "quiet"
clients = 2
arrival = "closed"
think_time = ["100ms", "2s"]
stop_reading_after = "5s"
"#,
    )
    .unwrap();
    assert_eq!(scenario.phases.len(), 4);
    assert_eq!(scenario.phases[2].rate(), (1.0, 4.0));
    assert_eq!(scenario.phases[1].name(), "warm");
    assert_eq!(scenario.groups[0].churn.unwrap().downtime, Duration::from_secs(1));
    assert_eq!(scenario.groups[1].think_time.max, Duration::from_secs(2));
    assert_eq!(scenario.groups[1].stop_reading_after, Some(Duration::from_secs(5)));
}

/// Each bad file fails, naming the file, the key and what to do.
#[test]
fn every_validation_error_names_the_file_the_key_and_the_fix() {
    let cases: &[(&str, &str)] = &[
        ("duration = 5\n[[group]]\nclients = 1\nbogus = 1", "unknown key `bogus`; the keys here are `name`, `clients`"),
        ("duration = 5\n[[group]]\nclinets = 1", "group[0].clinets: line 3, column 1: unknown key `clinets` (did you"),
        ("[[group]]\nclients = 1", "duration is missing"),
        ("duration = \"soon\"\n[[group]]\nclients = 1", "duration \"soon\" is not a duration"),
        ("duration = \"0s\"\n[[group]]\nclients = 1", "duration must be more than 0"),
        ("duration = \"5s\"", "group is missing"),
        ("duration = \"5s\"\n[[group]]\nname = \"a\"", "group[0].clients is missing"),
        ("duration = \"5s\"\n[[group]]\nclients = 0", "group[0].clients must be >= 1 (got 0)"),
        ("duration = \"5s\"\n[[group]]\nclients = 1\nrate = -2", "group[0].rate must be >= 0 (got -2)"),
        ("duration = \"5s\"\n[[group]]\nclients = 1\narrival = \"bursty\"", "group[0].arrival must be"),
        ("duration = \"5s\"\n[[group]]\nclients = 1\nroom = \"a b\"", "group[0].room \"a b\" is not a room name"),
        ("duration = \"5s\"\n[[group]]\nclients = 1\nroom = \"a\"\nrooms = [\"b\"]", "not both"),
        ("duration = \"5s\"\n[[group]]\nclients = 1\ntext_size = [10, 5]", "min <= max"),
        ("duration = \"5s\"\n[[group]]\nclients = 1\nbinary_size = 8", "binary_size must be at least 30 bytes"),
        ("duration = \"5s\"\n[[group]]\nclients = 1\nmix = { text = 0 }", "needs at least one weight"),
        ("duration = \"5s\"\n[[group]]\nclients = 1\nmix = { text = -1 }", "group[0].mix.text must be a weight"),
        ("duration = \"5s\"\n[[group]]\nclients = 1\nthink_time = \"1s\"", "only applies to arrival = \"closed\""),
        ("duration = \"5s\"\n[[group]]\nclients = 1\nchurn = { every = \"1ms\" }", "churn.every must be at least 10ms"),
        (
            "duration = \"5s\"\n[[group]]\nname = \"x\"\nclients = 1\n[[group]]\nname = \"x\"\nclients = 1",
            "group[1].name \"x\" is used twice",
        ),
        (
            "duration = \"5s\"\nprotocol = \"mqtt\"\n[[group]]\nclients = 1",
            "protocol must be \"chorus\", \"chorus-plain\" or \"raw\"",
        ),
        ("duration = \"5s\"\ntarget = \"http://x\"\n[[group]]\nclients = 1", "target must be a ws:// or wss:// URL"),
        ("duration = \"5s\"\ntargets = []\n[[group]]\nclients = 1", "targets must list at least one"),
        (
            "duration = \"5s\"\ntargets = [\"ws://a/\", \"tcp://b\"]\n[[group]]\nclients = 1",
            "targets must be a ws:// or wss:// URL (got \"tcp://b\")",
        ),
        ("duration = \"5s\"\ntargets = [\"ws://a/\", \"ws://a/\"]\n[[group]]\nclients = 1", "lists \"ws://a/\" twice"),
        ("duration = \"5s\"\ntarget = \"ws://a/\"\ntargets = [\"ws://b/\"]\n[[group]]\nclients = 1", "not both"),
        (
            "duration = \"5s\"\nspread = \"random\"\n[[group]]\nclients = 1",
            "spread must be \"round-robin\" or \"group\"",
        ),
        ("duration = \"5s\"\n[[group]]\nclients = 1\ntarget = 0", "group[0].target is a 1-based index"),
        (
            "duration = \"5s\"\ntargets = [\"ws://a/\", \"ws://b/\"]\n[[group]]\nclients = 1\ntarget = 3",
            "group[0].target is target 3 of a list of 2",
        ),
        (
            "duration = \"5s\"\ntarget = \"ws://x/\"\nprotocol = \"raw\"\n[[group]]\nclients = 1\nmix = { rename = 1 }",
            "raw servers have no renames",
        ),
        ("duration = \"5s\"\nname = \"has space\"\n[[group]]\nclients = 1", "name must be 1-64 letters"),
        ("duration = \"5s\"\nramp_up = \"1s\"\n[[phase]]\nduration = \"1s\"\n[[group]]\nclients = 1", "not both"),
        (
            "[[phase]]\ntype = \"drain\"\nduration = \"1s\"\n[[phase]]\nduration = \"1s\"\n[[group]]\nclients = 1",
            "a drain can only be the last phase",
        ),
        (
            "[[phase]]\ntype = \"ramp\"\nduration = \"1s\"\n[[group]]\nclients = 1",
            "needs at least one phase of type = \"steady\"",
        ),
        ("[[phase]]\ntype = \"warp\"\nduration = \"1s\"\n[[group]]\nclients = 1", "phase[0].type must be"),
        (
            "[[phase]]\nrate = -1.0\nduration = \"1s\"\n[[group]]\nclients = 1",
            "phase[0].rate must be a multiplier >= 0",
        ),
        (
            "duration = \"5s\"\n[[group]]\nclients = 1\n[thresholds]\n\"latency.p99\" = \"< 5ms\"",
            "is not a known threshold",
        ),
        ("duration = \"5s\"\n[[group]]\nclients = 1\n[thresholds]\n\"delivery.p99\" = \"fast\"", "must start with <"),
        ("duration = \"5s\"\n[[group]]\nclients = 1\n[server]\nmax_queue_bytes = \"lots\"", "server.max_queue_bytes"),
        ("duration = \"5s\"\n[[group]]\nclients = 1\n[server]\nwarp = true", "unknown key `warp`"),
        (
            "duration = 1e20\n[[group]]\nclients = 1",
            "duration must be a duration from 0 to 1e9 seconds (got 100000000000000000000)",
        ),
    ];
    for (text, expected) in cases {
        let err = parse(text).expect_err(text);
        assert!(err.starts_with("scenario test.toml: "), "{err}");
        assert!(err.contains(expected), "for\n{text}\nexpected {expected:?} in: {err}");
    }
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let err = Scenario::load(std::path::Path::new("/nonexistent/x.toml")).unwrap_err().to_string();
    assert!(err.contains("cannot read scenario /nonexistent/x.toml"), "{err}");
}

#[test]
fn every_shipped_scenario_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.starts_with('#'), "{} starts with a comment saying what it shows", path.display());
            Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
    }
    assert!(seen >= 6, "smoke, broadcast-1k, rooms, binary-mix, churn, slow-consumer at least");
}

#[test]
fn the_embedded_servers_history_settings_are_read() {
    let scenario = parse(
        "duration = \"5s\"\n[[group]]\nclients = 1\n[server]\nhistory = \"sqlite\"\nhistory_sync = \"normal\"\n\
         history_commit_window = \"25ms\"",
    )
    .unwrap();
    assert_eq!(scenario.server.history.commit_window, Duration::from_millis(25));
    assert_eq!(parse(MINIMAL).unwrap().server.history.commit_window, Duration::from_millis(10), "the default");
    let err =
        parse("duration = \"5s\"\n[[group]]\nclients = 1\n[server]\nhistory_commit_window = \"soon\"").unwrap_err();
    assert!(err.contains("server.history_commit_window"), "{err}");
    // Longer would hold every ack (and a shutdown) that long.
    let err = parse("duration = \"5s\"\n[[group]]\nclients = 1\n[server]\nhistory_commit_window = \"2s\"").unwrap_err();
    assert!(err.contains("server.history_commit_window") && err.contains("at most 1s"), "{err}");
}

#[test]
fn the_command_line_overrides_duration_rate_clients_seed_and_any_key() {
    use chorus::harness::scenario::Overrides;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("o.toml");
    let text = "ramp_up = \"5s\"\n[[phase]]\nduration = \"10s\"\n[[phase]]\nduration = \"30s\"\nrate = 2.0\n\
                [[group]]\nclients = 10\nrate = 4.0\n[[group]]\nclients = 3\nrate = 0\n";
    std::fs::write(&file, text.replace("ramp_up = \"5s\"\n", "")).unwrap();
    let overrides = Overrides {
        duration: Some(Duration::from_secs(4)),
        rate_multiplier: Some(0.5),
        clients_multiplier: Some(0.1),
        seed: Some(42),
        set: vec!["group.1.rate=3".into(), "name=short".into()],
    };
    let scenario = Scenario::load_with(&file, &overrides).unwrap();
    assert_eq!(scenario.steady_duration(), Duration::from_secs(4), "both steady phases, scaled together");
    assert_eq!(scenario.phases[0].duration(), Duration::from_secs(1));
    assert_eq!((scenario.groups[0].rate, scenario.groups[0].clients), (2.0, 1));
    assert_eq!((scenario.groups[1].rate, scenario.groups[1].clients), (1.5, 1), "--set, then the multiplier");
    assert_eq!((scenario.seed, scenario.name.as_str()), (42, "short"));
    assert!(scenario.overrides.iter().any(|o| o == "--set group.1.rate=3"), "{:?}", scenario.overrides);
    assert!(scenario.overrides.iter().any(|o| o.starts_with("--duration")), "{:?}", scenario.overrides);

    let bad = Overrides { set: vec!["group.7.rate=1".into()], ..Overrides::default() };
    let err = Scenario::load_with(&file, &bad).unwrap_err().to_string();
    assert!(err.contains("group has 2 entries: name one as group.0 to group.1"), "{err}");
    let bad = Overrides { set: vec!["group.0.rate=-1".into()], ..Overrides::default() };
    let err = Scenario::load_with(&file, &bad).unwrap_err().to_string();
    assert!(err.contains("group[0].rate must be >= 0 (got -1)"), "validated like the file: {err}");
}

#[test]
fn scripts_parse_into_a_program_with_loops_and_templates() {
    use chorus::harness::script::{Action, Op, Part};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lines.txt"), "hello\n\n  \nhow are you?\n").unwrap();
    let file = dir.path().join("s.toml");
    std::fs::write(
        &file,
        r#"duration = "5s"
[data.lines]
file = "lines.txt"
pick = "random"
[[group]]
clients = 2
script = [
  { think = ["1s", "2s"] },
  { connect = true },
  { join = "Rust" },
  { history = 20 },
  { loop = 3, do = [ { say = "{line} from {bot}" }, { think = "500ms" } ] },
  { file = "64KiB" },
  { wait_for = "hi {bot}", timeout = "2s", check = "greeted" },
  { leave = true },
]
[thresholds]
"checks.rate" = ">= 0.9"
"group.group1.checks.failed" = "== 0"
"#,
    )
    .unwrap();
    let scenario = Scenario::load(&file).unwrap();
    assert_eq!(scenario.data[0].lines, ["hello", "how are you?"], "blank lines skipped");
    let group = &scenario.groups[0];
    assert_eq!(group.rate, 0.0, "a scripted group sends only what its script says by default");
    let script = group.script.as_ref().unwrap();
    assert!(script.starts_offline, "thinking, then connect: the client arrives later");
    assert!(matches!(&script.ops[2], Op::Act(Action::Join(room)) if room.literal() == Some("Rust")));
    assert_eq!(script.ops[4], Op::Loop { times: 3, end: 7 });
    assert_eq!(script.ops[7], Op::EndLoop { start: 4 });
    let Op::Act(Action::Say(text)) = &script.ops[5] else { panic!("{:?}", script.ops[5]) };
    assert_eq!(text.parts, [Part::Line(0), Part::Text(" from ".into()), Part::Bot]);
    assert!(matches!(&script.ops[9], Op::Act(Action::WaitFor { check, .. }) if check == "greeted"));
    assert_eq!(scenario.rooms(), ["Rust", "lobby"], "rooms a script joins are tracked too");
}

#[test]
fn bad_scripts_name_the_step_and_the_fix() {
    let cases: &[(&str, &str)] = &[
        ("script = []", "group[0].script is empty"),
        ("script = [{ say = \"a\", think = \"1s\" }]", "group[0].script[0] has 2 actions (say, think)"),
        ("script = [{ }]", "group[0].script[0] has no action"),
        (
            "script = [{ shout = \"a\" }]",
            "group[0].script[0].shout: line 4, column 13: unknown step key `shout`: a step is one action (connect,",
        ),
        (
            "script = [{ loop = 2, do = [{ wait_for = \"x\", tiemout = \"1s\" }] }]",
            "script[0].do[0].tiemout: line 4, column 47: unknown step key `tiemout` (did you mean `timeout`?)",
        ),
        ("script = [{ say = \"{who}\" }]", "group[0].script[0].say has an unknown placeholder {who}"),
        ("script = [{ say = \"{line}\" }]", "add [data.lines]"),
        ("script = [{ think = \"1s\", timeout = \"2s\" }]", "group[0].script[0].timeout goes with wait_for only"),
        ("script = [{ leave = true }, { say = \"a\" }]", "group[0].script[1] needs a connection"),
        ("script = [{ connect = true }, { connect = true }]", "group[0].script[1].connect the client is connected"),
        ("script = [{ loop = 2, do = [{ leave = true }] }]", "a loop must end as it began"),
        ("script = [{ loop = 0, do = [{ say = \"a\" }] }]", "group[0].script[0].loop must be a count from 1"),
        ("script = [{ loop = 2 }]", "group[0].script[0].do is missing"),
        ("script = [{ wait_for = \"x\", timeout = \"0s\" }]", "group[0].script[0].timeout must be more than 0s"),
        ("script = [{ history = 0 }]", "group[0].script[0].history must be a number of messages from 1 to 500"),
        ("script = [{ file = 10 }]", "group[0].script[0].file must be at least 30 bytes"),
        ("script = [{ file = \"1GiB\" }]", "must be at most 256"),
        ("script = [{ join = \"bad room\" }]", "group[0].script[0].join"),
        ("script = [{ file = 100, name = \"a/b\" }]", "group[0].script[0].file.name"),
        ("script = [{ say = \"a\" }]\nchurn = { every = \"1s\" }", "group[0].churn does not go with a script"),
        ("mix = { text = 1 }\nfile_size = 100", "group[0].file_size sizes the mix's files"),
        ("mix = { file = 1 }\nfile_size = 10", "group[0].file_size must be at least 30 bytes"),
    ];
    for (group, want) in cases {
        let text = format!("duration = \"5s\"\n[[group]]\nclients = 1\n{group}\n");
        let err = parse(&text).unwrap_err();
        assert!(err.contains(want), "{group}: {err}");
        assert!(err.starts_with("scenario test.toml"), "{err}");
        assert!(!err.contains('\n'), "one line, as an error line shows it: {err}");
    }
    let raw = "protocol = \"raw\"\ntarget = \"ws://127.0.0.1:1/\"\nduration = \"5s\"\n[[group]]\nclients = 1\n";
    let err = parse(&format!("{raw}script = [{{ history = 5 }}]")).unwrap_err();
    assert!(err.contains("raw servers have no history"), "{err}");
    let err = parse(&format!("{raw}mix = {{ file = 1 }}")).unwrap_err();
    assert!(err.contains("raw servers have no file uploads"), "{err}");
    let err =
        parse("duration = \"5s\"\n[data.x]\nfile = \"/nonexistent/lines.txt\"\n[[group]]\nclients = 1\n").unwrap_err();
    assert!(err.contains("data.x.file cannot be read"), "{err}");
    let err = parse("duration = \"5s\"\n[[group]]\nclients = 1\n[thresholds]\n\"checks.rate\" = \"high\"").unwrap_err();
    assert!(err.contains("must start with"), "{err}");
}

/// Values the server would refuse, or that would do nothing, are refused
/// when the scenario is read, naming the key as written.
#[test]
fn values_that_would_fail_or_do_nothing_are_refused_up_front() {
    let cases: &[(&str, &str)] = &[
        ("script = [{ leave = false }]", "group[0].script[0].leave takes true only"),
        ("script = [{ say = \"a\" }, { connect = false }]", "group[0].script[1].connect takes true only"),
        ("script = [{ rename = \"bob smith\" }]", "group[0].script[0].rename is not a name the server accepts"),
        ("script = [{ rename = \"\" }]", "group[0].script[0].rename is not a name the server accepts"),
        ("script = [{ wait_for = \"x\", check = \" \" }]", "group[0].script[0].check is empty"),
        ("rooms = [\"a\", \"\"]", "group[0].rooms[1] \"\" is not a room name the server accepts"),
        ("script = [{ join = \"a b\" }]", "group[0].script[0].join is not a room name the server accepts"),
        ("mix = { file = 1 }\nscript = [{ say = \"x\" }]", "group[0].mix shapes the messages sent at `rate`"),
        ("rate = 0\nmix = { text = 1 }", "group[0].mix shapes the messages sent at `rate`, and rate is 0"),
        ("rooms = [\"lobby\", \"Lobby\"]", "group[0].rooms has room \"Lobby\", which looks like \"lobby\""),
        ("script = [{ join = \"LOBBY\" }]", "group[0].script has room \"LOBBY\", which looks like \"lobby\""),
    ];
    for (group, want) in cases {
        let err = parse(&format!("duration = \"5s\"\n[[group]]\nclients = 1\n{group}\n")).unwrap_err();
        assert!(err.contains(want), "{group}: {err}");
    }
    // A template is checked when it is filled in, not here.
    parse("duration = \"5s\"\n[[group]]\nclients = 1\nscript = [{ rename = \"guest-{bot}\" }]\n").unwrap();
}

/// A value of the wrong type says what the key takes, in the scenario's
/// terms (not serde's `i64` or `untagged enum`), with the fix.
#[test]
fn wrong_types_say_what_the_key_takes() {
    let cases: &[(&str, &str)] = &[
        (
            "[[group]]\nclients = \"2\"",
            "group[0].clients: line 3, column 11: must be a whole number, not the string \"2\": write it without quotes",
        ),
        (
            "[[group]]\nclients = 1\nrate = \"fast\"",
            "group[0].rate: line 4, column 8: must be a number, not the string \"fast\"",
        ),
        (
            "[[group]]\nclients = 1\ntext_size = true",
            "group[0].text_size: line 4, column 13: must be a size: a number of bytes, \"4KiB\"",
        ),
        (
            "[[group]]\nclients = 1\n[thresholds]\n\"checks.rate\" = 0.9",
            "must be a string in quotes, not the floating point 0.9: a threshold is a condition in quotes, like \"checks.rate\" = \">= 0.9\"",
        ),
        ("ramp_up = true\n[[group]]\nclients = 1", "ramp_up: line 2, column 11: must be a duration: \"30s\""),
        ("[[group]]\nclients = 1\n[thresholds]\n\"errors\" = true", "like \"errors\" = \">= N\""),
        (
            "[[group]]\nclients = 100000000000",
            "group[0].clients add up to 100000000000: a run has at most 1,000,000 clients in all",
        ),
    ];
    for (text, want) in cases {
        let err = parse(&format!("duration = \"5s\"\n{text}\n")).unwrap_err();
        assert!(err.contains(want), "{text}: {err}");
        assert!(!err.contains("i64") && !err.contains("untagged"), "{err}");
    }
}
