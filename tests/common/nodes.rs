//! Brokers of a test's own for the fault suite, started by `scripts/kafka.sh` on free ports (a
//! single node, one with a SASL listener, or a three-node cluster), whose nodes a test may kill
//! and restart; stopped and deleted when dropped.

use std::path::PathBuf;
use std::process::Command;

/// `scripts/kafka.sh` with `args`, the environment of this test's brokers (`KAFKA_*` of the
/// caller removed, except `KAFKA_CLUSTER_PORTS`, `KAFKA_READY_TIMEOUT` and `KAFKA_VERSION`, so
/// that `KAFKA_VERSION=4.1.1 cargo test` runs these brokers on that version too); its output,
/// or the error with everything it printed.
fn kafka_sh(env: &[(&str, String)], args: &[&str]) -> Result<String, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh");
    let mut command = Command::new("bash");
    command.arg(script).args(args);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        let keep = [
            "KAFKA_CLUSTER_PORTS",
            "KAFKA_READY_TIMEOUT",
            "KAFKA_VERSION",
        ]
        .contains(&name.as_str());
        if name.starts_with("KAFKA_") && !keep {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
    let output = command
        .output()
        .map_err(|e| format!("cannot run {script}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "scripts/kafka.sh {} failed ({}):\n{text}",
            args.join(" "),
            output.status
        ))
    }
}

/// Brokers started by `scripts/kafka.sh` for fault tests, which may kill and restart their
/// nodes. Node `n` has `node.id` `n`. Blocking methods: call them through `blocking`.
pub struct Brokers {
    /// `bootstrap.servers` of every node.
    pub bootstrap: String,
    env: Vec<(&'static str, String)>,
    /// Stop the nodes when dropped: they were started here.
    owned: bool,
    /// Delete this state directory when dropped.
    scratch: Option<PathBuf>,
}

impl Brokers {
    /// A single-node broker of this test's own on two free ports, with fresh storage in a
    /// scratch directory; stopped and deleted when dropped. Never the shared broker.
    pub fn single(name: &str) -> Self {
        Self::single_with(name, &[])
    }

    /// [`Brokers::single`] with more `scripts/kafka.sh` settings in `extra` (env, e.g.
    /// `KAFKA_AUTO_CREATE_TOPICS=false`).
    pub fn single_with(name: &str, extra: &[(&'static str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(super::unique(&format!("ktransform-{name}")));
        let (client, controller) = (free_port(), free_port());
        let env = vec![
            ("KAFKA_NODES", "1".to_string()),
            ("KAFKA_STATE_DIR", dir.display().to_string()),
            ("KAFKA_PORT", client.to_string()),
            ("KAFKA_CONTROLLER_PORT", controller.to_string()),
        ];
        let env = env
            .into_iter()
            .chain(extra.iter().map(|(k, v)| (*k, v.to_string())))
            .collect();
        let brokers = Brokers {
            bootstrap: format!("127.0.0.1:{client}"),
            env,
            owned: true,
            scratch: Some(dir),
        };
        if let Err(e) = kafka_sh(&brokers.env, &["up"]) {
            drop(brokers);
            panic!("{e}");
        }
        brokers
    }

    /// The three-node cluster of `KAFKA_NODES=3 scripts/kafka.sh`: on the ports of env
    /// `KAFKA_CLUSTER_PORTS` if set; else the default one (19092 29092 39092), reused if it
    /// runs (and then left running) or started if its ports are free; else one on free ports
    /// in a scratch directory (CI may run its broker on 29092). A cluster started here has
    /// fresh storage and is stopped when dropped.
    pub fn cluster() -> Self {
        const DEFAULT_PORTS: [u16; 3] = [19092, 29092, 39092];
        let mut env = vec![("KAFKA_NODES", "3".to_string())];
        let mut scratch = None;
        let ports: Vec<u16> = if let Ok(ports) = std::env::var("KAFKA_CLUSTER_PORTS") {
            ports
                .split_whitespace()
                .map(|p| p.parse().expect("KAFKA_CLUSTER_PORTS: port numbers"))
                .collect()
        } else if kafka_sh(&env, &["status"]).is_ok()
            || DEFAULT_PORTS
                .iter()
                .all(|&p| port_free(p) && port_free(p + 1))
        {
            DEFAULT_PORTS.to_vec()
        } else {
            let (ports, dir) = scratch_cluster(&mut env);
            scratch = Some(dir);
            ports
        };
        let running = kafka_sh(&env, &["status"]).is_ok();
        match Self::up(&ports, env, !running, scratch) {
            Ok(brokers) => brokers,
            // A port free when checked can be taken before the broker binds it: an outgoing
            // connection's ephemeral port (39092 is in Linux's range; CI hit it once). Once
            // more, on other free ports in a scratch directory.
            Err(e) if std::env::var("KAFKA_CLUSTER_PORTS").is_err() => {
                eprintln!("{e}\nretrying the cluster once on other free ports");
                let mut env = vec![("KAFKA_NODES", "3".to_string())];
                let (ports, dir) = scratch_cluster(&mut env);
                Self::up(&ports, env, true, Some(dir)).unwrap_or_else(|e| panic!("{e}"))
            }
            Err(e) => panic!("{e}"),
        }
    }

    /// Starts (or finds running) the nodes of `env` on `ports`; on failure, stops what it
    /// started and removes `scratch`.
    fn up(
        ports: &[u16],
        env: Vec<(&'static str, String)>,
        owned: bool,
        scratch: Option<PathBuf>,
    ) -> Result<Self, String> {
        let brokers = Brokers {
            bootstrap: ports
                .iter()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect::<Vec<_>>()
                .join(","),
            env,
            owned,
            scratch,
        };
        kafka_sh(&brokers.env, &["up"])?;
        Ok(brokers)
    }

    /// The state directory of brokers started in a scratch directory (each node's files are in
    /// its `node-N/`).
    pub fn state_dir(&self) -> Option<&std::path::Path> {
        self.scratch.as_deref()
    }

    fn node(&self, command: &str, node: i32) {
        let n = node.to_string();
        if let Err(e) = kafka_sh(&self.env, &[command, &n]) {
            panic!("{e}");
        }
    }

    /// SIGKILL node `n`: a crash. Its data stays.
    pub fn kill_node(&self, n: i32) {
        self.node("kill-node", n);
    }

    /// Stops node `n` cleanly (SIGTERM). Its data stays.
    pub fn stop_node(&self, n: i32) {
        self.node("stop-node", n);
    }

    /// Starts node `n` again on its data and waits until it serves.
    pub fn start_node(&self, n: i32) {
        self.node("start-node", n);
    }
}

impl Drop for Brokers {
    fn drop(&mut self) {
        if self.owned {
            if let Err(e) = kafka_sh(&self.env, &["down"]) {
                eprintln!("{e}");
            }
        }
        if let Some(dir) = &self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A TCP port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Free ports for a three-node cluster and a scratch state directory, set in `env`.
fn scratch_cluster(env: &mut Vec<(&'static str, String)>) -> (Vec<u16>, PathBuf) {
    let ports: Vec<u16> = (0..3).map(|_| free_port_pair()).collect();
    let dir = std::env::temp_dir().join(super::unique("ktransform-cluster"));
    env.push((
        "KAFKA_CLUSTER_PORTS",
        format!("{} {} {}", ports[0], ports[1], ports[2]),
    ));
    env.push(("KAFKA_STATE_DIR", dir.display().to_string()));
    (ports, dir)
}

/// A free port whose successor is free too (a node's client and controller ports).
fn free_port_pair() -> u16 {
    loop {
        let port = free_port();
        if port < u16::MAX && port_free(port + 1) {
            return port;
        }
    }
}
