//! Child processes under test: output forwarded to the test's stderr (so a
//! failing test shows it), killed on drop, signals sent for real.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use anyhow::{Context, bail};
use baton_proto::v1::admin_service_client::AdminServiceClient;
use baton_proto::v1::handoff_service_client::HandoffServiceClient;
use baton_proto::v1::health_service_client::HealthServiceClient;
use tonic::transport::{Channel, ClientTlsConfig};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::{TempDir, eventually};

/// A running child process.
pub struct Process {
    child: Child,
    name: String,
}

impl Process {
    /// Starts `cmd`, forwarding its stdout and stderr line by line to ours
    /// and handing every line to `on_line` as well.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        on_line: impl Fn(&str) + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name}: {cmd:?}"))?;
        let on_line = std::sync::Arc::new(on_line);
        let pipes: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(child.stdout.take().context("stdout")?),
            Box::new(child.stderr.take().context("stderr")?),
        ];
        for pipe in pipes {
            let (label, on_line) = (name.to_owned(), on_line.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    eprintln!("[{label}] {line}");
                    on_line(&line);
                }
            });
        }
        Ok(Self {
            child,
            name: name.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `KILL`, `STOP`, `CONT`).
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()?;
        if !status.success() {
            bail!("kill -{signal} {} ({}) failed", self.pid(), self.name);
        }
        Ok(())
    }

    /// `kill -9`, and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits for the process to exit by itself, at most `deadline`.
    pub async fn wait(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let name = self.name.clone();
        eventually(&format!("{name} to exit"), deadline, || {
            let status = self.child.try_wait().ok().flatten();
            async move { status }
        })
        .await
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `baton-router` process on a loopback port, with its data directory.
pub struct Router {
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    pub addr: SocketAddr,
    pub data: TempDir,
    process: Option<Process>,
    tls: Option<ClientTlsConfig>,
    /// Every line the process printed, across restarts.
    logs: Arc<Mutex<Vec<String>>>,
}

impl Router {
    /// Starts the router binary with an embedded store in a fresh data dir;
    /// `extra` are more flags (`--set policy.threshold=0.8`, …).
    pub async fn start(bin: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_with_env(bin, extra, &[]).await
    }

    /// [`Router::start`] with extra environment variables.
    pub async fn start_with_env(
        bin: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::start_full(bin, extra, env, None).await
    }

    /// A router serving TLS (`extra` carries `--tls-cert`/`--tls-key`); the
    /// harness's own clients trust `tls`.
    pub async fn start_tls(
        bin: &Path,
        extra: &[&str],
        tls: ClientTlsConfig,
    ) -> anyhow::Result<Self> {
        Self::start_full(bin, extra, &[], Some(tls)).await
    }

    async fn start_full(
        bin: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        tls: Option<ClientTlsConfig>,
    ) -> anyhow::Result<Self> {
        let data = TempDir::new("router");
        let mut args = vec!["--data-dir".to_owned(), data.path().display().to_string()];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut router = Self {
            bin: bin.to_owned(),
            args,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data,
            process: None,
            tls,
            logs: Arc::default(),
        };
        router.launch("127.0.0.1:0").await?;
        Ok(router)
    }

    /// Starts the binary and waits until `grpc.health.v1` says SERVING.
    async fn launch(&mut self, listen: &str) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .args(["--listen", listen, "--log-format", "json"])
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let logs = Arc::clone(&self.logs);
        let process = Process::spawn("baton-router", cmd, move |line| {
            logs.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(line.to_owned());
            if line.contains("baton-router serving")
                && let Some(addr) =
                    json_field(line, "addr").and_then(|a| a.parse::<SocketAddr>().ok())
            {
                let _ = tx.lock().map(|tx| tx.send(addr));
            }
        })?;
        self.process = Some(process);
        let addr: SocketAddr =
            tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
                .await?
                .context("baton-router did not report its address within 30s")?;
        self.addr = addr;
        let endpoint = self.endpoint();
        let tls = self.tls.clone();
        eventually("baton-router to serve", Duration::from_secs(30), || {
            let (endpoint, tls) = (endpoint.clone(), tls.clone());
            async move {
                let mut channel = Channel::from_shared(endpoint).ok()?;
                if let Some(tls) = tls {
                    channel = channel.tls_config(tls).ok()?;
                }
                let mut client = HealthClient::new(channel.connect().await.ok()?);
                let reply = client.check(HealthCheckRequest::default()).await.ok()?;
                (reply.into_inner().status == ServingStatus::Serving as i32).then_some(())
            }
        })
        .await;
        Ok(())
    }

    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Waits until the router has printed a line containing `needle` (a
    /// line from any run of it on this data directory); that line.
    pub async fn logged(&self, needle: &str, deadline: Duration) -> String {
        let logs = Arc::clone(&self.logs);
        eventually(&format!("baton-router to log {needle:?}"), deadline, || {
            let found = logs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .find(|l| l.contains(needle))
                .cloned();
            async move { found }
        })
        .await
    }

    pub fn process(&mut self) -> &mut Process {
        self.process.as_mut().expect("router is running")
    }

    /// `kill -9`: no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Starts the router again on the same data directory and port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let listen = self.addr.to_string();
        self.launch(&listen).await
    }

    /// A connection to the router (over TLS when it serves TLS).
    pub async fn channel(&self) -> Channel {
        let mut endpoint = Channel::from_shared(self.endpoint()).expect("endpoint");
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).expect("tls config");
        }
        endpoint.connect().await.expect("connect to baton-router")
    }

    pub async fn handoff(&self) -> HandoffServiceClient<Channel> {
        HandoffServiceClient::new(self.channel().await)
    }

    pub async fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel().await)
    }

    pub async fn health(&self) -> HealthServiceClient<Channel> {
        HealthServiceClient::new(self.channel().await)
    }
}

/// The string value of `"key":"value"` in a JSON log line.
fn json_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}
