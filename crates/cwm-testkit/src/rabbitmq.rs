//! A throw-away RabbitMQ node for tests.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, require_binary, wait_for_port};

/// The server script that runs the broker in the foreground as the calling user (the
/// `/usr/sbin` wrapper insists on switching to the `rabbitmq` user).
const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
/// The matching control tool.
const CTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";

/// A `rabbitmq-server` node on a free loopback AMQP port, with its own node name
/// (`cwm<port>@localhost`), its own `epmd` on a free port, its own data, log and config
/// directories, no plugins, and a private Erlang cookie (`HOME` is its temp dir). Several run
/// side by side. Killed (with its epmd) on drop.
///
/// [`RabbitMq::stop`] shuts it down cleanly and [`RabbitMq::start_again`] brings it back on the
/// same port with its durable queues and persistent messages.
pub struct RabbitMq {
    node: Option<Child>,
    epmd: Option<Child>,
    port: u16,
    dist_port: u16,
    epmd_port: u16,
    dir: tempfile::TempDir,
}

impl RabbitMq {
    /// Start the node and wait until it has booted and accepts AMQP connections.
    pub fn start() -> Self {
        require_binary("rabbitmq-server", "rabbitmq-server");
        require_binary("epmd", "erlang-base");
        let dir = tempfile::tempdir().expect("rabbitmq dir");
        std::fs::write(dir.path().join("enabled_plugins"), "[].\n").expect("plugins file");
        std::fs::write(
            dir.path().join("rabbitmq.conf"),
            "loopback_users.guest = true\n",
        )
        .expect("config file");
        let mut rabbit = Self {
            node: None,
            epmd: None,
            port: free_port(),
            dist_port: free_port(),
            epmd_port: free_port(),
            dir,
        };
        rabbit.spawn_epmd();
        rabbit.spawn();
        rabbit
    }

    fn log_dir(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// The node's name, `cwm<port>@localhost`.
    pub fn node_name(&self) -> String {
        format!("cwm{}@localhost", self.port)
    }

    fn env(&self, cmd: &mut Command) {
        let d = self.dir.path();
        cmd.env("HOME", d)
            .env("RABBITMQ_NODENAME", self.node_name())
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.log_dir())
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_PLUGINS_EXPAND_DIR", d.join("plugins-expand"))
            .env("RABBITMQ_PID_FILE", d.join("rabbit.pid"))
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .current_dir(d);
    }

    fn spawn_epmd(&mut self) {
        let child = Command::new("epmd")
            .arg("-port")
            .arg(self.epmd_port.to_string())
            .args(["-address", "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start epmd");
        self.epmd = Some(child);
        assert!(
            wait_for_port(self.epmd_port, Duration::from_secs(10)),
            "epmd did not open port {}",
            self.epmd_port
        );
    }

    fn spawn(&mut self) {
        let out = std::fs::File::create(self.dir.path().join("server.out")).expect("server log");
        let err = out.try_clone().expect("server log");
        let mut cmd = Command::new(SERVER);
        self.env(&mut cmd);
        // Its own process group: the script forks the Erlang VM, which forks helpers; kill
        // them all together.
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start rabbitmq-server");
        self.node = Some(child);
        let hint = self.dir.path().join("server.out");
        assert!(
            wait_for_port(self.port, Duration::from_secs(90)),
            "rabbitmq-server did not open port {}; see {} and {}",
            self.port,
            hint.display(),
            self.log_dir().display()
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.ctl_output(&["await_startup", "--timeout", "30"]);
            if out.status.success() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "rabbitmq node {} did not finish booting: {}{}",
                    self.node_name(),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The AMQP port (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f` (guest may log in from loopback only).
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// The directory holding the node's data, logs and config.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    fn ctl_output(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(CTL);
        self.env(&mut cmd);
        cmd.arg("-n")
            .arg(self.node_name())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run rabbitmqctl")
    }

    /// Run `rabbitmqctl -q <args>` against this node (e.g. `["list_queues", "name",
    /// "messages"]`) and return its standard output; panics when it fails.
    pub fn ctl(&self, args: &[&str]) -> String {
        let mut all = vec!["-q"];
        all.extend_from_slice(args);
        let out = self.ctl_output(&all);
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Shut the node down cleanly (`rabbitmqctl stop`: durable queues and persistent messages
    /// are kept for [`RabbitMq::start_again`]) and wait for it to exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.node.take() else {
            return;
        };
        let _ = self.ctl_output(&["stop"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                kill_group(child.id());
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        kill_group(child.id());
        let _ = child.wait();
        panic!("rabbitmq-server did not shut down within 30 s");
    }

    /// Kill the node (SIGKILL to its whole process group).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.node.take() {
            kill_group(child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same ports and data (after [`RabbitMq::stop`] or [`RabbitMq::kill`])
    /// and wait until it has booted.
    pub fn start_again(&mut self) {
        self.kill();
        if self.epmd.is_none() {
            self.spawn_epmd();
        }
        self.spawn();
    }

    /// Whether the node process is running.
    pub fn is_running(&self) -> bool {
        self.node.is_some()
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        self.kill();
        if let Some(mut epmd) = self.epmd.take() {
            let _ = epmd.kill();
            let _ = epmd.wait();
        }
    }
}

/// SIGKILL to the process group `pgid` (a child started with `process_group(0)`).
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_nodes_run_side_by_side_and_one_restarts() {
        let a = RabbitMq::start();
        let mut b = RabbitMq::start();
        assert_ne!(a.port(), b.port());
        assert!(a.ctl(&["list_queues", "name"]).trim().is_empty());
        let port = b.port();
        b.stop();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
        b.start_again();
        assert_eq!(b.port(), port);
        assert!(b.ctl(&["list_queues", "name"]).trim().is_empty());
        assert!(a.ctl(&["list_queues", "name"]).trim().is_empty());
    }
}
