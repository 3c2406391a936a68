//! A real `redis-server` on a free port for the tests that need one, stopped
//! when dropped. Tests that use it are `#[ignore = "needs redis-server"]`
//! (Debian's `redis-server`, which `.ci/run` installs); run them with
//! `cargo test -- --include-ignored`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::free_port;

pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    /// More `redis-server` arguments, for every launch.
    extra: Vec<String>,
}

impl Redis {
    /// Start one (no persistence unless `appendonly`), and wait until it answers.
    pub fn start(appendonly: bool) -> Redis {
        Redis::start_with(appendonly, &[])
    }

    /// Start one with more `redis-server` arguments (`--cluster-enabled yes`).
    pub fn start_with(appendonly: bool, extra: &[&str]) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let extra = extra.iter().map(|a| a.to_string()).collect();
        let mut redis = Redis { child: None, port: free_port(), dir, extra };
        redis.launch(appendonly);
        redis
    }

    fn launch(&mut self, appendonly: bool) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", if appendonly { "yes" } else { "no" }])
            .args(&self.extra)
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt install redis-server)");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stop it (SIGKILL: as a crash).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port.
    pub fn restart(&mut self, appendonly: bool) {
        self.stop();
        self.launch(appendonly);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
