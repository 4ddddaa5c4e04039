//! Real etcd processes for tests: one member or a cluster, each on free
//! loopback ports in a temporary directory, killed and restarted for real.

use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::{Process, TempDir, eventually, free_port};

struct Member {
    name: String,
    client: u16,
    peer: u16,
    data: TempDir,
    process: Option<Process>,
}

/// An etcd cluster started by the test (a single member is a cluster of one).
pub struct Etcd {
    members: Vec<Member>,
    token: String,
}

impl Etcd {
    pub async fn single() -> anyhow::Result<Self> {
        Self::cluster(1).await
    }

    /// Starts `n` members and waits until every one answers healthy. A port
    /// that was free when picked may be taken by a parallel test before etcd
    /// binds it: then the whole cluster starts again on new ports.
    pub async fn cluster(n: usize) -> anyhow::Result<Self> {
        for _ in 0..4 {
            let mut etcd = Self::start(n)?;
            if etcd.all_healthy().await {
                return Ok(etcd);
            }
        }
        anyhow::bail!("etcd did not start after 4 tries (see its log above)")
    }

    /// Waits until every member is healthy; false as soon as one has exited.
    async fn all_healthy(&mut self) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        for i in 0..self.members.len() {
            loop {
                let port = self.members[i].client;
                if let Ok((200, body)) = http_get(port, "/health").await
                    && body.contains("true")
                {
                    break;
                }
                let exited = self.members[i]
                    .process
                    .as_mut()
                    .is_some_and(Process::exited);
                assert!(
                    std::time::Instant::now() < deadline,
                    "timed out after 30s waiting for etcd member {i} to be healthy"
                );
                if exited {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        true
    }

    fn start(n: usize) -> anyhow::Result<Self> {
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                data: TempDir::new("etcd"),
                process: None,
            })
            .collect();
        let mut etcd = Self {
            members,
            token: format!("baton-test-{}-{}", std::process::id(), free_port()),
        };
        for i in 0..n {
            etcd.launch(i)?;
        }
        Ok(etcd)
    }

    fn launch(&mut self, i: usize) -> anyhow::Result<()> {
        let cluster: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect();
        let m = &self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", &m.name])
            .arg("--data-dir")
            .arg(m.data.path())
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-level", "warn"]);
        let process = Process::spawn(&format!("etcd-{}", m.name), cmd, |_| {}).context(
            "cannot start etcd: install it with `apt-get install etcd-server` (scripts/test does)",
        )?;
        self.members[i].process = Some(process);
        Ok(())
    }

    async fn wait_healthy(&self, i: usize) {
        let port = self.members[i].client;
        eventually(
            &format!("etcd member {i} to be healthy"),
            Duration::from_secs(30),
            || async move {
                let (status, body) = http_get(port, "/health").await.ok()?;
                (status == 200 && body.contains("true")).then_some(())
            },
        )
        .await;
    }

    /// Client URLs of the members, in order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client))
            .collect()
    }

    /// All client URLs, comma-separated, as `--etcd` takes them.
    pub fn endpoints_arg(&self) -> String {
        self.endpoints().join(",")
    }

    /// `kill -9` one member.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].process.take() {
            p.kill();
        }
    }

    /// Starts a killed member again on its data directory.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i);
        self.launch(i)
    }

    /// Waits until member `i` answers healthy (it has a leader).
    pub async fn healthy(&self, i: usize) {
        self.wait_healthy(i).await;
    }

    /// `etcd_server_proposals_committed_total` of member `i`: writes that went through raft.
    pub async fn proposals_committed(&self, i: usize) -> anyhow::Result<u64> {
        let (_, body) = http_get(self.members[i].client, "/metrics").await?;
        body.lines()
            .find_map(|l| l.strip_prefix("etcd_server_proposals_committed_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
            .context("no etcd_server_proposals_committed_total in /metrics")
    }
}

/// A minimal HTTP/1.1 GET on loopback: status code and body.
pub async fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await??;
    // HTTP/1.0: the answer comes whole, never chunked.
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await??;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP response")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
