//! Test support for anything that needs a real Redis (this crate's tests,
//! the server's integration tests): a throw-away `redis-server` on a free
//! port (never the shared one on 6379) that can be killed, paused and
//! restarted on the same port, and a minimal RESP client to inspect it
//! independently of the crate's own client.
//!
//! Only compiled with the `testing` feature. Without `redis-server` on the
//! PATH, [`redis_server`] prints `skipping: redis-server not found` and
//! returns `None`, unless `ARQONBUS_REQUIRE_REDIS=1`, in which case it
//! panics so the test fails.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc, clippy::panic)]
// The waits here block the thread (`std::thread::sleep`) on child
// processes, so their deadlines are wall time; tokio's clock would stand
// still under a test on paused time.
#![allow(clippy::disallowed_types)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A `redis-server` child process on its own port and directory.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    durable: bool,
}

/// Starts a server that keeps nothing (`--save "" --appendonly no`), or
/// returns `None` (after printing why) when `redis-server` is not installed
/// and `ARQONBUS_REQUIRE_REDIS` is not `1`.
pub fn redis_server() -> Option<RedisServer> {
    start_server(false)
}

/// Like [`redis_server`], but the server keeps its data across
/// [`RedisServer::kill`] and [`RedisServer::restart`] (append-only file,
/// fsync on every write, in its temp dir): what storage wrote before a crash
/// is still there after it.
pub fn durable_redis_server() -> Option<RedisServer> {
    start_server(true)
}

/// Whether `tool` runs (`tool --version`). When it does not: panics if
/// `ARQONBUS_REQUIRE_REDIS=1`, else prints `skipping: <tool> not found`.
fn tool_available(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        if std::env::var("ARQONBUS_REQUIRE_REDIS").as_deref() == Ok("1") {
            panic!("{tool} not found, and ARQONBUS_REQUIRE_REDIS=1 requires it");
        }
        eprintln!("skipping: {tool} not found");
    }
    found
}

fn start_server(durable: bool) -> Option<RedisServer> {
    if !tool_available("redis-server") {
        return None;
    }
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("arqon-storage-redis-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A free port can be taken between the probe and the bind: retry.
    for _ in 0..5 {
        let mut server = RedisServer {
            port: free_port(),
            dir: dir.clone(),
            child: None,
            durable,
        };
        if server.try_start() {
            return Some(server);
        }
    }
    panic!("could not start redis-server");
}

/// A port nobody listens on (probed by binding it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn try_start(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(if self.durable {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "no"]
            })
            .args(["--dir", self.dir.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = &mut self.child
                && child.try_wait().unwrap().is_some()
            {
                self.child = None;
                return false; // exited: port taken?
            }
            if self.ping() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} never answered PING", self.port);
    }

    /// Starts the server again on the same port (after [`Self::kill`]).
    /// Its data is gone unless it is [durable](durable_redis_server).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running server");
        assert!(self.try_start(), "redis-server could not restart");
    }

    /// Kills the server (SIGKILL): connections drop at once.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success());
    }

    fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        if stream.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
    }

    /// Runs one command on a fresh connection.
    pub fn cmd(&self, args: &[&str]) -> Resp {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend(format!("${}\r\n", arg.len()).bytes());
            request.extend(arg.bytes());
            request.extend(b"\r\n");
        }
        (&stream).write_all(&request).unwrap();
        read_resp(&mut BufReader::new(stream))
    }

    /// `XRANGE key - +` as `(id, fields)`.
    pub fn xrange(&self, key: &str) -> Vec<(String, HashMap<String, Vec<u8>>)> {
        let Resp::Array(Some(entries)) = self.cmd(&["XRANGE", key, "-", "+"]) else {
            panic!("XRANGE reply");
        };
        entries
            .into_iter()
            .map(|entry| {
                let Resp::Array(Some(mut parts)) = entry else {
                    panic!("entry");
                };
                let Resp::Array(Some(fields)) = parts.pop().unwrap() else {
                    panic!("fields");
                };
                let id = parts.pop().unwrap().text();
                let mut map = HashMap::new();
                let mut fields = fields.into_iter();
                while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
                    map.insert(name.text(), value.bytes());
                }
                (id, map)
            })
            .collect()
    }

    /// `HGETALL key` as a map.
    pub fn hgetall(&self, key: &str) -> HashMap<String, String> {
        let Resp::Array(Some(items)) = self.cmd(&["HGETALL", key]) else {
            panic!("HGETALL reply");
        };
        let mut map = HashMap::new();
        let mut items = items.into_iter();
        while let (Some(name), Some(value)) = (items.next(), items.next()) {
            map.insert(name.text(), value.text());
        }
        map
    }

    pub fn int(&self, args: &[&str]) -> i64 {
        match self.cmd(args) {
            Resp::Int(n) => n,
            other => panic!("{args:?}: expected an integer, got {other:?}"),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            // A paused server ignores nothing but SIGKILL, which is what kill sends.
            self.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A RESP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

impl Resp {
    pub fn bytes(self) -> Vec<u8> {
        match self {
            Resp::Bulk(Some(bytes)) => bytes,
            Resp::Simple(text) => text.into_bytes(),
            other => panic!("not a string: {other:?}"),
        }
    }

    pub fn text(self) -> String {
        String::from_utf8(self.bytes()).unwrap()
    }
}

fn read_resp(reader: &mut impl BufRead) -> Resp {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(1);
    match kind {
        "+" => Resp::Simple(rest.to_owned()),
        "-" => Resp::Error(rest.to_owned()),
        ":" => Resp::Int(rest.parse().unwrap()),
        "$" => {
            let len: i64 = rest.parse().unwrap();
            if len < 0 {
                return Resp::Bulk(None);
            }
            let mut data = vec![0u8; usize::try_from(len).unwrap() + 2];
            reader.read_exact(&mut data).unwrap();
            data.truncate(data.len() - 2);
            Resp::Bulk(Some(data))
        }
        "*" => {
            let len: i64 = rest.parse().unwrap();
            if len < 0 {
                return Resp::Array(None);
            }
            Resp::Array(Some((0..len).map(|_| read_resp(reader)).collect()))
        }
        other => panic!("unexpected RESP type {other:?}"),
    }
}

/// Three `redis-server --cluster-enabled yes` masters on free ports, joined
/// with `redis-cli --cluster create … --cluster-replicas 0 --cluster-yes`:
/// every slot is assigned and `cluster_state:ok` on every node once
/// [`redis_cluster`] returns. Dropping it kills the nodes and removes their
/// directories.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<ClusterNode>,
    dir: PathBuf,
}

#[derive(Debug)]
struct ClusterNode {
    port: u16,
    child: Child,
}

/// How long the joined cluster may take to report `cluster_state:ok` and all
/// 16384 slots assigned on every node.
const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Starts a three-master Redis Cluster that keeps nothing, or returns `None`
/// (after printing why) when `redis-server` or `redis-cli` is not installed
/// and `ARQONBUS_REQUIRE_REDIS` is not `1` (then it panics).
pub fn redis_cluster() -> Option<RedisCluster> {
    if !["redis-server", "redis-cli"]
        .into_iter()
        .all(tool_available)
    {
        return None;
    }
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "arqon-storage-redis-cluster-{}-{n}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    // Built before the nodes start, so a panic below still kills them.
    let mut cluster = RedisCluster {
        nodes: Vec::new(),
        dir,
    };
    for _ in 0..3 {
        cluster.start_node();
    }
    cluster.create();
    cluster.wait_ready();
    Some(cluster)
}

/// A free port `P` whose cluster bus port `P + 10000` is free too (both
/// probed by binding them), avoiding `taken` (ports and bus ports already
/// handed out).
fn free_cluster_port(taken: &[u16]) -> u16 {
    for _ in 0..1000 {
        let port = free_port();
        let Some(bus) = port.checked_add(10000) else {
            continue;
        };
        if taken
            .iter()
            .any(|&t| t == port || t == bus || t.checked_add(10000) == Some(port))
        {
            continue;
        }
        let Ok(client) = TcpListener::bind(("127.0.0.1", port)) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", bus)).is_ok() {
            drop(client);
            return port;
        }
    }
    panic!("no free port P with a free cluster bus port P+10000");
}

/// Whether something on `port` answers `PING` with `+PONG`.
fn ping_port(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

impl RedisCluster {
    /// `redis-cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        format!("redis-cluster://{}", hosts.join(","))
    }

    /// The client ports of the masters, in start order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|node| node.port).collect()
    }

    /// Runs a command with `redis-cli -c -p <first port> …` (cluster mode
    /// follows `MOVED`/`ASK` redirects) and returns its stdout, trimmed.
    /// Error replies come back as text (`ERR …`), as `redis-cli` prints them.
    pub fn cli(&self, args: &[&str]) -> String {
        let port = self.nodes[0].port.to_string();
        let output = Command::new("redis-cli")
            .args(["-c", "-p", &port])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("spawn redis-cli");
        assert!(
            output.status.success(),
            "redis-cli -c -p {port} {args:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    /// Starts one more master on a free port (retrying when the port, or its
    /// bus port, is taken between the probe and the bind) and waits for PING.
    fn start_node(&mut self) {
        let taken = self.ports();
        for _ in 0..10 {
            let port = free_cluster_port(&taken);
            let dir = self.dir.join(format!("node-{port}"));
            std::fs::create_dir_all(&dir).unwrap();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .args(["--cluster-node-timeout", "2000"])
                .args(["--save", ""])
                .args(["--appendonly", "no"])
                .args(["--dir", dir.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            let mut node = ClusterNode { port, child };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if node.child.try_wait().unwrap().is_some() {
                    break; // exited: port or bus port taken?
                }
                if ping_port(port) {
                    self.nodes.push(node);
                    return;
                }
                if Instant::now() >= deadline {
                    let _ = node.child.kill();
                    let _ = node.child.wait();
                    panic!("cluster redis-server on port {port} never answered PING");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
        panic!("could not start a cluster redis-server");
    }

    /// `redis-cli --cluster create` over all nodes: three masters, no replicas.
    fn create(&self) {
        let addresses: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("spawn redis-cli --cluster create");
        assert!(
            output.status.success(),
            "redis-cli --cluster create {} failed ({}):\n{}\n{}",
            addresses.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Waits until every node reports `cluster_state:ok` and
    /// `cluster_slots_assigned:16384`, or panics after
    /// `CLUSTER_READY_TIMEOUT`.
    fn wait_ready(&self) {
        let deadline = Instant::now() + CLUSTER_READY_TIMEOUT;
        loop {
            let last: Vec<(u16, String)> = self
                .nodes
                .iter()
                .map(|node| (node.port, node_cluster_info(node.port)))
                .collect();
            let ready = last.iter().all(|(_, info)| {
                let lines: Vec<&str> = info.lines().map(str::trim).collect();
                lines.contains(&"cluster_state:ok")
                    && lines.contains(&"cluster_slots_assigned:16384")
            });
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Redis Cluster on ports {:?} not ready (cluster_state:ok and \
                 cluster_slots_assigned:16384 on every node) within {:?}; \
                 last CLUSTER INFO: {last:#?}",
                self.ports(),
                CLUSTER_READY_TIMEOUT
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `redis-cli -p <port> cluster info`, or the failure as text.
fn node_cluster_info(port: u16) -> String {
    match Command::new("redis-cli")
        .args(["-p", &port.to_string(), "cluster", "info"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(output) => String::from_utf8_lossy(&output.stdout).into_owned(),
        Err(error) => format!("redis-cli failed: {error}"),
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
