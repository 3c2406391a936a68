//! A real `chorus server` process, for tests that kill, restart or starve it.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The `chorus` binary built for these tests.
pub fn chorus() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chorus"));
    command.env("NO_COLOR", "1").env("RUST_LOG", "info");
    command
}

/// `chorus server --addr ADDR --data DIR` plus `extra` arguments.
pub fn server_command(addr: &str, data: &Path, extra: &[&str]) -> Command {
    let mut command = chorus();
    command.args(["server", "--addr", addr, "--data"]).arg(data).args(extra);
    command
}

/// The lines of `pipe`, as they come, from a thread.
pub fn read_lines(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

pub struct ServerProcess {
    pub child: Child,
    /// `ws://127.0.0.1:PORT/`
    pub url: String,
    pub port: u16,
    lines: mpsc::Receiver<String>,
    logs: Vec<String>,
}

impl ServerProcess {
    /// Start `command` (a `chorus server`, possibly wrapped) and wait until
    /// it listens. `Err` carries its stderr when it exits first.
    pub fn spawn(mut command: Command) -> Result<ServerProcess, String> {
        let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().map_err(|e| e.to_string())?;
        let lines = read_lines(child.stderr.take().unwrap());
        let mut logs = Vec::new();
        loop {
            match lines.recv_timeout(Duration::from_secs(20)) {
                Ok(line) => {
                    let url = line.split("listening on ").nth(1).map(|rest| rest.split_whitespace().next().unwrap());
                    logs.push(line.clone());
                    if let Some(url) = url {
                        let port = url.trim_end_matches('/').rsplit(':').next().unwrap().parse().unwrap();
                        return Ok(ServerProcess { child, url: url.to_string(), port, lines, logs });
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                    logs.push(format!("({status})"));
                    return Err(logs.join("\n"));
                }
            }
        }
    }

    /// Everything it logged so far.
    pub fn logs(&mut self) -> Vec<String> {
        self.logs.extend(self.lines.try_iter());
        self.logs.clone()
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for it to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        self.child.wait().unwrap()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `chorus run ARGS...` on the async runtime, stdout and stderr piped,
/// killed if dropped.
pub fn chorus_run<I, S>(args: I) -> tokio::process::Child
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    tokio::process::Command::new(env!("CARGO_BIN_EXE_chorus"))
        .arg("run")
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// What follows `prefix` on the first stderr line that starts with it
/// (`dashboard: `, `metrics: `); the rest of stderr is read and dropped,
/// so the process never blocks on a full pipe.
pub async fn announced(child: &mut tokio::process::Child, prefix: &str) -> String {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line()).await.unwrap().unwrap();
        let line = line.unwrap_or_else(|| panic!("stderr ended before a line starting with {prefix:?}"));
        if let Some(rest) = line.strip_prefix(prefix) {
            let rest = rest.to_string();
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return rest;
        }
    }
}
