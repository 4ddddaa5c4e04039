//! SPEC §6 abuse limits, over the built router: connections that never
//! speak, idle connections, HTTP/2 streams per connection, wrong tokens,
//! the file-descriptor limit, tokens in clear text, and a shutdown with
//! streams nobody reads.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_proto::v1::admin_service_client::AdminServiceClient;
use baton_proto::v1::handoff_service_client::HandoffServiceClient;
use baton_proto::v1::*;
use baton_test_support::{Process, Router, TempDir, eventually, next_within};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::{Code, Request};

use crate::{request, router, router_bin};

const TOKEN: &str = "lead-token-limits-0123";

/// Waits until the router closes `tcp` (EOF or reset), at most `deadline`.
async fn closed_by_router(tcp: &mut TcpStream, deadline: Duration) {
    let mut buf = [0u8; 4096];
    let end = Instant::now() + deadline;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, tcp.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {deadline:?}"),
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(_)) => continue, // the server's SETTINGS, a TLS alert: keep reading
        }
    }
}

/// Connections the router holds open on `port` (its side ESTABLISHED), from /proc.
fn established(port: u16) -> usize {
    let local = format!(":{port:04X} ");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .map(|text| {
            text.lines()
                .skip(1)
                .filter(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    cols.len() > 3 && format!("{} ", cols[1]).ends_with(&local) && cols[3] == "01"
                })
                .count()
        })
        .sum()
}

#[tokio::test]
async fn connections_that_never_speak_are_closed_after_the_handshake_timeout() {
    let router = router(&["--memory", "--set", "server.handshake_timeout=1s"]).await;
    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(TcpStream::connect(router.addr).await.unwrap());
    }
    for tcp in &mut silent {
        closed_by_router(tcp, Duration::from_secs(10)).await;
    }
    assert!(
        opened.elapsed() >= Duration::from_secs(1),
        "closed too early"
    );
    // The router still serves.
    let bots = AdminServiceClient::new(router.channel().await)
        .list_bots(ListBotsRequest {})
        .await
        .unwrap();
    assert_eq!(bots.into_inner().bots.len(), 3);
}

#[tokio::test]
async fn tls_connections_that_never_send_a_client_hello_are_dropped() {
    let dir = TempDir::new("limits-tls");
    let (ca, cert, key) = crate::auth::certificates(&dir, "limits");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&ca).unwrap()))
        .domain_name("localhost");
    let router = Router::start_tls(
        router_bin(),
        &[
            "--memory",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--set",
            "server.handshake_timeout=1s",
        ],
        tls,
    )
    .await
    .expect("start a TLS router");
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(TcpStream::connect(router.addr).await.unwrap());
    }
    for tcp in &mut silent {
        closed_by_router(tcp, Duration::from_secs(10)).await;
    }
    // A client that completes the handshake is served.
    let bots = AdminServiceClient::new(router.channel().await)
        .list_bots(ListBotsRequest {})
        .await
        .unwrap();
    assert_eq!(bots.into_inner().bots.len(), 3);
}

#[tokio::test]
async fn an_idle_connection_is_closed_but_one_with_an_open_stream_is_kept() {
    let router = router(&[
        "--memory",
        "--set",
        "server.idle_timeout=2s",
        "--set",
        "server.handshake_timeout=30s",
    ])
    .await;
    let port = router.addr.port();
    // Let the harness's own health-check connection go first.
    eventually(
        "the harness connection to close",
        Duration::from_secs(10),
        || async move { (established(port) == 0).then_some(()) },
    )
    .await;

    let idle = router.channel().await;
    AdminServiceClient::new(idle.clone())
        .list_bots(ListBotsRequest {})
        .await
        .unwrap();
    let watching = router.channel().await;
    let mut feed = AdminServiceClient::new(watching)
        .watch_decisions(WatchDecisionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(established(port), 2);
    let start = Instant::now();
    eventually(
        "the idle connection to close",
        Duration::from_secs(10),
        || async move { (established(port) == 1).then_some(()) },
    )
    .await;
    assert!(
        start.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    // The watcher, idle longer than idle_timeout too, still hears decisions.
    router
        .handoff()
        .await
        .request_handoff(request("c-idle", "lead", "hello"))
        .await
        .unwrap();
    let event = next_within(
        &mut feed,
        Duration::from_secs(10),
        "a decision on the idle watcher",
    )
    .await
    .expect("the stream is still open")
    .expect("an event");
    assert_eq!(event.decision.expect("a decision").contact_id, "c-idle");
    drop(idle);
}

/// The server's first SETTINGS frame, as (identifier, value) pairs.
async fn server_settings(addr: SocketAddr) -> Vec<(u16, u32)> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut header = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut header))
        .await
        .expect("a frame within 10s")
        .unwrap();
    assert_eq!(header[3], 0x4, "the first frame is SETTINGS");
    let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await.unwrap();
    payload
        .chunks_exact(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect()
}

const MAX_CONCURRENT_STREAMS: u16 = 0x3;

#[tokio::test]
async fn max_concurrent_streams_is_advertised_and_held() {
    let router = router(&["--memory"]).await;
    assert!(
        server_settings(router.addr)
            .await
            .contains(&(MAX_CONCURRENT_STREAMS, 100)),
        "default"
    );
    let router = crate::router(&["--memory", "--set", "server.max_concurrent_streams=5"]).await;
    assert!(
        server_settings(router.addr)
            .await
            .contains(&(MAX_CONCURRENT_STREAMS, 5))
    );
    // Five streams fill a connection: a sixth call on it waits for a slot,
    // while another connection is served.
    let channel = router.channel().await;
    let mut feeds = Vec::new();
    for _ in 0..5 {
        feeds.push(
            AdminServiceClient::new(channel.clone())
                .watch_decisions(WatchDecisionsRequest::default())
                .await
                .unwrap()
                .into_inner(),
        );
    }
    let mut sixth = AdminServiceClient::new(channel.clone());
    let waiting = tokio::spawn(async move { sixth.list_bots(ListBotsRequest {}).await });
    AdminServiceClient::new(router.channel().await)
        .list_bots(ListBotsRequest {})
        .await
        .unwrap();
    assert!(!waiting.is_finished(), "the sixth call got a stream");
    // Ending one stream lets it through.
    drop(feeds.pop());
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the sixth call is served once a stream ends")
        .unwrap()
        .unwrap();
}

/// Starts the router binary itself (through `sh` when `ulimit` is given),
/// collecting its log lines; returns once it serves, with its address.
async fn spawn_logged(
    args: &[&str],
    ulimit: Option<u32>,
    env: &[(&str, &str)],
) -> (Process, Arc<Mutex<Vec<String>>>, SocketAddr) {
    let mut cmd = match ulimit {
        Some(n) => {
            let mut cmd = Command::new("sh");
            cmd.arg("-c")
                .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                .arg(router_bin());
            cmd
        }
        None => Command::new(router_bin()),
    };
    cmd.args(args)
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .envs(env.iter().copied());
    let lines = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&lines);
    let process = Process::spawn("baton-router", cmd, move |line| {
        seen.lock().unwrap().push(line.to_owned());
    })
    .unwrap();
    let addr = logged(&lines, "baton-router serving").await;
    let addr = addr
        .split("\"addr\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|a| a.parse().ok())
        .expect("the serving line names the address");
    (process, lines, addr)
}

/// The first log line containing `text`, waiting at most 20s for it.
async fn logged(lines: &Arc<Mutex<Vec<String>>>, text: &str) -> String {
    eventually(
        &format!("a log line with '{text}'"),
        Duration::from_secs(20),
        || {
            let found = lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(text))
                .cloned();
            async move { found }
        },
    )
    .await
}

fn token_config(dir: &TempDir) -> String {
    let sha: String = Sha256::digest(TOKEN)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let file = dir.path().join("baton.toml");
    std::fs::write(
        &file,
        format!("[[auth.principals]]\nrole = \"bot:lead\"\ntoken_sha256 = \"{sha}\"\n"),
    )
    .unwrap();
    file.display().to_string()
}

/// What `ListBots` answers the holder of `token` (a bot's token may not
/// call the admin service: PERMISSION_DENIED once authenticated).
async fn list_bots(channel: &Channel, token: &str) -> Code {
    let mut call = Request::new(ListBotsRequest {});
    call.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    match AdminServiceClient::new(channel.clone())
        .list_bots(call)
        .await
    {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn wrong_tokens_from_one_address_are_limited_and_logged() {
    let dir = TempDir::new("limits-auth");
    let config = token_config(&dir);
    let (_process, lines, addr) = spawn_logged(
        &[
            "--memory",
            "--listen",
            "127.0.0.1:0",
            "--config",
            &config,
            "--set",
            "server.auth_failures_per_minute=5",
        ],
        None,
        &[],
    )
    .await;
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    // The right token is authenticated before any failure.
    assert_eq!(list_bots(&channel, TOKEN).await, Code::PermissionDenied);
    for i in 0..5 {
        assert_eq!(
            list_bots(&channel, &format!("guess-{i}")).await,
            Code::Unauthenticated,
            "guess {i}"
        );
    }
    assert_eq!(
        list_bots(&channel, "guess-5").await,
        Code::ResourceExhausted
    );
    // Once over, the address is refused whatever its token.
    assert_eq!(list_bots(&channel, TOKEN).await, Code::ResourceExhausted);
    let line = logged(&lines, "too many failed authentications").await;
    assert!(line.contains("127.0.0.1"), "{line}");
    assert!(!line.contains("guess"), "tokens are never logged: {line}");
}

#[tokio::test]
async fn tokens_on_a_non_loopback_address_without_tls_are_warned_about() {
    let dir = TempDir::new("limits-cleartext");
    let config = token_config(&dir);
    let (_process, lines, _) = spawn_logged(
        &["--memory", "--listen", "0.0.0.0:0", "--config", &config],
        None,
        &[],
    )
    .await;
    let line = logged(&lines, "bearer tokens travel in clear text").await;
    assert!(line.contains("\"level\":\"WARN\""), "{line}");
    // On loopback, no such warning.
    let (_process, lines, _) = spawn_logged(
        &["--memory", "--listen", "127.0.0.1:0", "--config", &config],
        None,
        &[],
    )
    .await;
    logged(&lines, "bearer tokens required").await;
    assert!(
        !lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("clear text"))
    );
}

/// CPU time (user + system, in clock ticks) the process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // After the command name: state is field 3, utime 14 and stime 15.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test]
async fn at_the_descriptor_limit_the_router_logs_and_backs_off() {
    let (process, lines, addr) = spawn_logged(
        &[
            "--memory",
            "--listen",
            "127.0.0.1:0",
            "--set",
            "server.handshake_timeout=5m",
        ],
        Some(64),
        &[],
    )
    .await;
    let pid = process.pid();
    // Hold connections until the router cannot accept more.
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    let line = logged(&lines, "cannot accept connections").await;
    assert!(line.contains("Too many open files"), "{line}");
    // Backing off, not spinning: well under half a core over a second.
    let (before, at) = (cpu_ticks(pid), Instant::now());
    eventually("a second to pass", Duration::from_secs(5), || {
        let passed = at.elapsed() >= Duration::from_secs(1);
        async move { passed.then_some(()) }
    })
    .await;
    let used = cpu_ticks(pid) - before;
    assert!(
        used < 40,
        "{used} ticks of CPU in one second at the fd limit"
    );
    // Once connections close, new clients are served again.
    held.clear();
    let channel = eventually(
        "a connection to be accepted",
        Duration::from_secs(20),
        || async move {
            Channel::from_shared(format!("http://{addr}"))
                .ok()?
                .connect()
                .await
                .ok()
        },
    )
    .await;
    AdminServiceClient::new(channel)
        .list_bots(ListBotsRequest {})
        .await
        .unwrap();
}

#[tokio::test]
async fn sigterm_ends_promptly_with_unread_streams() {
    let (mut process, lines, addr) = spawn_logged(
        &[
            "--memory",
            "--listen",
            "127.0.0.1:0",
            "--set",
            "server.shutdown_grace=60s",
            "--set",
            "server.max_concurrent_streams=200",
        ],
        None,
        &[],
    )
    .await;
    // Small HTTP/2 windows, so that unread streams fill them quickly.
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .initial_connection_window_size(65_535)
        .initial_stream_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut unread = Vec::new();
    for _ in 0..50 {
        unread.push(
            AdminServiceClient::new(channel.clone())
                .watch_decisions(WatchDecisionsRequest::default())
                .await
                .unwrap()
                .into_inner(),
        );
    }
    let caller = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut handoff = HandoffServiceClient::new(caller);
    for i in 0..600 {
        handoff
            .request_handoff(request(&format!("c-{i}"), "lead", "hello there"))
            .await
            .unwrap();
    }
    let stopping = Instant::now();
    process.signal("TERM").unwrap();
    let status = process.wait(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "{:?}",
        stopping.elapsed()
    );
    assert!(
        !lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("grace period over")),
        "the drain waited out the grace period"
    );
    drop(unread);
}

/// Load shedding: with `server.max_calls_in_flight = 1`, a call made while
/// another is being handled is refused at once, naming the key; once the
/// first is answered, calls go through again. Health checks are not counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_past_max_calls_in_flight_are_shed_at_once() {
    let router = baton_test_support::Router::start_with_env(
        crate::router_bin(),
        &["--set", "server.max_calls_in_flight=1"],
        &[("BATON_TEST_PAUSE_AFTER_LOCK", "shed-1=2s")],
    )
    .await
    .expect("start baton-router");
    let mut first = router.handoff().await;
    let held = tokio::spawn(async move {
        first
            .request_handoff(crate::request("shed-1", "lead", "I want to sell my house"))
            .await
    });
    router
        .logged(
            "test pause point: holding the contact lock",
            std::time::Duration::from_secs(20),
        )
        .await;
    let mut other = router.handoff().await;
    let started = std::time::Instant::now();
    let shed = other
        .request_handoff(crate::request("shed-2", "lead", "hello"))
        .await
        .unwrap_err();
    assert_eq!(shed.code(), tonic::Code::ResourceExhausted, "{shed:?}");
    assert!(
        shed.message().contains("server.max_calls_in_flight"),
        "{shed:?}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "not at once"
    );
    let first = held.await.unwrap().unwrap().into_inner();
    assert_eq!(crate::decision(&first), baton_proto::v1::Decision::Approved);
    let again = other
        .request_handoff(crate::request("shed-2", "lead", "hello"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(crate::decision(&again), baton_proto::v1::Decision::Stay);
}

/// The handler timeout: a decision not answered within
/// `server.call_timeout` gets DEADLINE_EXCEEDED naming the key; what it cut
/// off wrote nothing and left no lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_call_timeout_is_cut_off_whole() {
    let router = baton_test_support::Router::start_with_env(
        crate::router_bin(),
        &["--set", "server.call_timeout=1s"],
        &[("BATON_TEST_PAUSE_AFTER_LOCK", "slow-1=3s")],
    )
    .await
    .expect("start baton-router");
    let mut handoff = router.handoff().await;
    let mut req = crate::request("slow-1", "lead", "I want to sell my house");
    req.request_id = "slow-r1".into();
    let cut = handoff.request_handoff(req.clone()).await.unwrap_err();
    assert_eq!(cut.code(), tonic::Code::DeadlineExceeded, "{cut:?}");
    assert!(cut.message().contains("server.call_timeout"), "{cut:?}");
    let found = router
        .admin()
        .await
        .get_contact(baton_proto::v1::GetContactRequest {
            contact_id: "slow-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        found.code(),
        tonic::Code::NotFound,
        "half a decision was written"
    );
    // No lock was left: a retry takes the lock at once (a held one would
    // answer CONTACT_BUSY after policy.lock_wait, 250 ms, well inside the
    // timeout) and is cut off at the same pause point again.
    let again = handoff.request_handoff(req).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::DeadlineExceeded, "{again:?}");
}

/// A probe's report stream lasts as long as the probe: `server.call_timeout`
/// does not cut it, however short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probes_report_stream_outlives_call_timeout() {
    let router = crate::router(&["--set", "server.call_timeout=200ms"]).await;
    let report = || ReportHealthRequest {
        report: Some(HealthReport {
            bot: "buyer".into(),
            window_ms: 60_000,
            sample_count: 100,
            p50_ms: 400.0,
            p95_ms: 900.0,
            p99_ms: 1000.0,
            error_rate: 0.0,
            observed_at_unix_ms: 0,
        }),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut health = router.health().await;
    let call = tokio::spawn(async move {
        health
            .report_health(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    for _ in 0..4 {
        tx.send(report()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(tx);
    let answered = call.await.unwrap();
    assert!(answered.is_ok(), "the report stream was cut: {answered:?}");
}
