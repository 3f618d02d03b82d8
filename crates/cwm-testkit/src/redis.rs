//! A throw-away `redis-server` for tests.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, require_binary, wait_for_port};

/// A `redis-server` on a free loopback port with its own data directory, without automatic
/// persistence (`--save '' --appendonly no`). Killed on drop.
///
/// [`Redis::stop`] shuts it down and [`Redis::start_again`] brings it back on the same port
/// with the data it had: outage tests see a real outage and a real recovery.
pub struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    extra_args: Vec<String>,
    password: Option<String>,
}

impl Redis {
    /// Start redis-server and wait until it answers PING.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Start redis-server with extra command-line arguments (e.g. `["--requirepass", "s3cret"]`).
    pub fn start_with(extra_args: &[&str]) -> Self {
        require_binary("redis-server", "redis-server");
        let password = extra_args
            .iter()
            .position(|a| *a == "--requirepass")
            .and_then(|i| extra_args.get(i + 1))
            .map(|p| (*p).to_owned());
        let mut redis = Self {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("redis data dir"),
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
            password,
        };
        redis.spawn();
        redis
    }

    fn spawn(&mut self) {
        let log = self.dir.path().join("redis.log");
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--logfile")
            .arg(&log)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        assert!(
            wait_for_port(self.port, Duration::from_secs(20)),
            "redis-server did not open port {}; see {}",
            self.port,
            log.display()
        );
        // The port opens before a dump is loaded: wait for PONG.
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.command(&["PING"]).is_ok_and(|r| r == "+PONG") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not answer PING; see {}", log.display());
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>` (no credentials).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The data directory (holds `redis.log`, and `dump.rdb` after [`Redis::stop`]).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Send one command (authenticating first when started with `--requirepass`) and return the
    /// first line of the reply (`+PONG`, `:3`, `-ERR ...`, `$5` ...).
    pub fn command(&self, args: &[&str]) -> std::io::Result<String> {
        let stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut writer = stream;
        let mut line = String::new();
        if let Some(password) = &self.password {
            writer.write_all(&encode(&["AUTH", password]))?;
            reader.read_line(&mut line)?;
            line.clear();
        }
        writer.write_all(&encode(args))?;
        reader.read_line(&mut line)?;
        Ok(line.trim_end().to_owned())
    }

    /// Shut the server down, saving its data first (`SHUTDOWN SAVE`: everything it acknowledged
    /// is kept for [`Redis::start_again`]), and wait for the process to exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // A successful SHUTDOWN closes the connection without a reply.
        let _ = self.command(&["SHUTDOWN", "SAVE"]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server did not shut down within 10 s");
    }

    /// Kill the server (SIGKILL): writes since the last save are lost.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port and data directory (after [`Redis::stop`] or
    /// [`Redis::kill`]), and wait until it answers.
    pub fn start_again(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Whether the server process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A command in the RESP wire format.
fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_stops_and_starts_again_on_the_same_port_with_its_data() {
        let mut redis = Redis::start();
        assert_eq!(redis.command(&["SET", "k", "v"]).unwrap(), "+OK");
        let port = redis.port();
        redis.stop();
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
        redis.start_again();
        assert_eq!(redis.port(), port);
        assert_eq!(redis.command(&["GET", "k"]).unwrap(), "$1");
    }

    #[test]
    fn password_protected_redis() {
        let redis = Redis::start_with(&["--requirepass", "s3cret"]);
        assert_eq!(redis.command(&["PING"]).unwrap(), "+PONG");
    }
}
