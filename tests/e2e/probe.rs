//! End-to-end tests of baton-probe beside a real bot server and the router:
//! the built `baton-router` and `baton-probe` binaries as real processes,
//! and an HTTP bot in the test process whose error rate the test switches.
//!
//! `baton-probe` is found next to `baton-router` in the target directory:
//! run `cargo build -p baton-probe` before these tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use baton_proto::v1::admin_service_client::AdminServiceClient;
use baton_proto::v1::{Bot, BotHealth, Decision, ListBotsRequest};
use baton_test_support::{Process, Router, TempDir, eventually, next_within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::Channel;

use crate::{decision, request, router, router_bin};

const DEADLINE: Duration = Duration::from_secs(30);

fn probe_bin() -> PathBuf {
    let bin = router_bin().with_file_name("baton-probe");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p baton-probe` first",
        bin.display()
    );
    bin
}

/// A bot's HTTP health endpoint: every `fail_every`-th request answers 500,
/// every answer after `delay_ms`.
struct HttpBot {
    addr: SocketAddr,
    fail_every: Arc<AtomicU64>,
    delay_ms: Arc<AtomicU64>,
    server: tokio::task::JoinHandle<()>,
}

impl HttpBot {
    async fn start(fail_every: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fail = Arc::new(AtomicU64::new(fail_every));
        let delay = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let (shared, slow) = (Arc::clone(&fail), Arc::clone(&delay));
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_bot(
                    stream,
                    Arc::clone(&shared),
                    Arc::clone(&slow),
                    Arc::clone(&requests),
                ));
            }
        });
        Self {
            addr,
            fail_every: fail,
            delay_ms: delay,
            server,
        }
    }

    fn delay_ms(&self, ms: u64) {
        self.delay_ms.store(ms, Ordering::SeqCst);
    }

    fn url(&self) -> String {
        format!("http://{}/health", self.addr)
    }

    fn fail_every(&self, n: u64) {
        self.fail_every.store(n, Ordering::SeqCst);
    }
}

impl Drop for HttpBot {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// HTTP/1.1 with keep-alive, GET only: enough for a health endpoint.
async fn serve_bot(
    mut stream: TcpStream,
    fail: Arc<AtomicU64>,
    delay: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
            let every = fail.load(Ordering::SeqCst);
            let status = if every > 0 && n.is_multiple_of(every) {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\n\r\n{{}}");
            let delay = delay.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            if stream.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A `baton-probe` process measuring the bot "buyer" for `router`.
struct Probe {
    process: Process,
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Probe {
    /// `window`: long for counting, short to see a change in the bot soon.
    async fn start(router: &Router, window: &str, extra: &[&str]) -> Self {
        Self::start_with_env(router, window, extra, &[]).await
    }

    async fn start_with_env(
        router: &Router,
        window: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut cmd = Command::new(probe_bin());
        cmd.args(["--bot", "buyer", "--router", &router.endpoint()])
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            // Quick probes, reports and reconnections.
            .args([
                "--interval",
                "10ms",
                "--window",
                window,
                "--window-slots",
                "10",
            ])
            .args(["--report-every", "100ms"])
            .args(["--reconnect-min", "50ms", "--reconnect-max", "500ms"])
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info");
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = Mutex::new(tx);
        let lines = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&lines);
        let process = Process::spawn("baton-probe", cmd, move |line| {
            if let Ok(mut log) = log.lock() {
                log.push(line.to_owned());
            }
            if line.contains("baton-probe listening")
                && let Some(addr) = json_str(line, "addr").and_then(|a| a.parse().ok())
            {
                let _ = tx.lock().map(|tx| tx.send(addr));
            }
        })
        .expect("start baton-probe");
        let addr: SocketAddr =
            tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
                .await
                .unwrap()
                .expect("baton-probe reports its address");
        Self {
            process,
            addr,
            lines,
        }
    }

    /// Whether the probe logged a line containing every one of `parts`.
    fn logged(&self, parts: &[&str]) -> bool {
        let lines = self.lines.lock().unwrap();
        lines.iter().any(|l| parts.iter().all(|p| l.contains(p)))
    }

    async fn healthz(&self) -> String {
        let (status, body) = http(self.addr, "GET", "/healthz", "").await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// One HTTP/1.1 request on a fresh connection; the status code and body.
async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connect to the probe");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The string value of `"key":"value"` in a line of JSON.
fn json_str<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let start = json.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let len = json[start..].find('"')?;
    Some(&json[start..start + len])
}

/// The unsigned value of `"key":123` in a line of JSON.
fn json_u64(json: &str, key: &str) -> u64 {
    let start = json
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + key.len()
        + 3;
    let digits: String = json[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap_or_else(|_| panic!("{key} in {json}"))
}

async fn buyer(router: &Router) -> Bot {
    let bots = crate::bots(router).await;
    bots.into_iter()
        .find(|b| b.id == "buyer")
        .expect("buyer is configured")
}

/// Polls ListBots until the buyer satisfies `check`.
async fn buyer_where(router: &Router, what: &str, check: impl Fn(&Bot) -> bool) -> Bot {
    let check = &check;
    eventually(what, DEADLINE, move || async move {
        let bot = buyer(router).await;
        check(&bot).then_some(bot)
    })
    .await
}

fn health(bot: &Bot) -> BotHealth {
    BotHealth::try_from(bot.health).expect("known health")
}

fn samples(bot: &Bot) -> u64 {
    bot.last_report.as_ref().map_or(0, |r| r.sample_count)
}

fn error_rate(bot: &Bot) -> f64 {
    bot.last_report.as_ref().map_or(0.0, |r| r.error_rate)
}

/// A lead asking to buy: a handoff to the buyer, for a contact never seen.
/// Asks for a lead → buyer handoff of a fresh contact: the contact and the reply.
async fn ask_buyer(router: &Router) -> (String, baton_proto::v1::RequestHandoffResponse) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let contact = format!(
        "probe-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    let reply = router
        .handoff()
        .await
        .request_handoff(request(&contact, "lead", "I want to buy a house"))
        .await
        .unwrap()
        .into_inner();
    (contact, reply)
}

/// Waits until the router has settled the handoff deferred on `contact`
/// by itself, and checks that it completed it on its first retry: the
/// contact is the buyer's, its last handoff is lead → buyer, and the
/// deferral names that handoff. That handoff.
async fn deferral_completed(router: &Router, contact: &str) -> baton_proto::v1::Handoff {
    let mut admin = router.admin().await;
    let state = eventually(
        &format!("the handoff deferred on {contact} to be settled"),
        DEADLINE,
        || {
            let mut admin = admin.clone();
            let ask = baton_proto::v1::GetContactRequest {
                contact_id: contact.to_owned(),
            };
            async move {
                let state = admin.get_contact(ask).await.ok()?.into_inner();
                let status = state.deferral.as_ref()?.status.clone();
                (status != "PENDING").then_some(state)
            }
        },
    )
    .await;
    let deferral = state.deferral.clone().unwrap();
    assert_eq!(
        (
            deferral.status.as_str(),
            deferral.source_bot.as_str(),
            deferral.target_bot.as_str(),
            deferral.tries
        ),
        ("COMPLETED", "lead", "buyer", 1),
        "{deferral:?}"
    );
    assert_eq!(state.owner, "buyer", "{state:?}");
    let last = state
        .history
        .last()
        .cloned()
        .expect("a handoff in the history");
    assert_eq!(
        (
            last.handoff_id.as_str(),
            last.source_bot.as_str(),
            last.target_bot.as_str(),
            last.kind.as_str()
        ),
        (deferral.handoff_id.as_str(), "lead", "buyer", "HANDOFF"),
        "{state:?}"
    );
    // Asked again, the router says the same: nothing is left pending.
    let again = admin
        .get_contact(baton_proto::v1::GetContactRequest {
            contact_id: contact.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.deferral, Some(deferral));
    last
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn the_probed_error_rate_decides_between_deferred_and_approved() {
    let router = router(&["--set", "health.min_samples=20"]).await;
    let bot = HttpBot::start(5).await; // 20 % of probes fail
    let _probe = Probe::start(&router, "2s", &["--http-url", &bot.url()]).await;

    let failing = buyer_where(&router, "a report of the 20 % error rate", |b| {
        samples(b) >= 20 && error_rate(b) >= 0.15
    })
    .await;
    assert_eq!(health(&failing), BotHealth::Unhealthy, "{failing:?}");
    let (deferred, reply) = ask_buyer(&router).await;
    assert_eq!(
        decision(&reply),
        Decision::DeferredUnhealthy,
        "{}",
        reply.reason
    );
    assert!(reply.reason.contains("error rate"), "{}", reply.reason);
    let mut incoming = router
        .handoff()
        .await
        .watch_handoffs(baton_proto::v1::WatchHandoffsRequest {
            bot: "buyer".into(),
        })
        .await
        .unwrap()
        .into_inner();

    bot.fail_every(20); // 5 %
    let recovered = buyer_where(&router, "a report of the 5 % error rate", |b| {
        samples(b) >= 20 && error_rate(b) <= 0.07
    })
    .await;
    assert_eq!(health(&recovered), BotHealth::Healthy, "{recovered:?}");
    // The deferred handoff is completed by the router on its own, and
    // pushed to the buyer.
    let completed = deferral_completed(&router, &deferred).await;
    let pushed = pushed_for(&mut incoming, &deferred).await;
    assert_eq!(pushed.handoff_id, completed.handoff_id);
    let (_, reply) = ask_buyer(&router).await;
    assert_eq!(decision(&reply), Decision::Approved, "{}", reply.reason);
    assert_eq!(reply.target_bot, "buyer");
}

/// The first handoff of `contact` pushed on a WatchHandoffs stream.
async fn pushed_for(
    incoming: &mut tonic::Streaming<baton_proto::v1::WatchHandoffsResponse>,
    contact: &str,
) -> baton_proto::v1::Handoff {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let item = next_within(
            incoming,
            left,
            &format!("handoff of {contact} on WatchHandoffs"),
        )
        .await
        .expect("no error on WatchHandoffs")
        .expect("WatchHandoffs open");
        if let Some(h) = item.handoff.filter(|h| h.contact_id == contact) {
            return h;
        }
    }
}

#[tokio::test]
async fn a_killed_probe_goes_stale_and_a_restarted_one_makes_the_bot_healthy_again() {
    let router = router(&["--set", "health.stale_after=2s"]).await;
    let bot = HttpBot::start(0).await;
    let mut probe = Probe::start(&router, "2s", &["--http-url", &bot.url()]).await;
    buyer_where(&router, "healthy reports", |b| {
        samples(b) >= 20 && health(b) == BotHealth::Healthy
    })
    .await;
    assert_eq!(decision(&ask_buyer(&router).await.1), Decision::Approved);

    probe.process.kill();
    let stale = buyer_where(&router, "the buyer to go stale", |b| {
        health(b) == BotHealth::Stale
    })
    .await;
    assert!(
        stale.health_detail.contains("stale after 2s"),
        "{}",
        stale.health_detail
    );
    let (deferred, reply) = ask_buyer(&router).await;
    assert_eq!(
        decision(&reply),
        Decision::DeferredUnhealthy,
        "{}",
        reply.reason
    );

    let restarted_at = now_ms();
    let _probe = Probe::start(&router, "2s", &["--http-url", &bot.url()]).await;
    let fresh = buyer_where(&router, "healthy reports from the new probe", |b| {
        samples(b) >= 20
            && health(b) == BotHealth::Healthy
            && b.last_report
                .as_ref()
                .is_some_and(|r| r.observed_at_unix_ms > restarted_at)
    })
    .await;
    assert_eq!(error_rate(&fresh), 0.0);
    deferral_completed(&router, &deferred).await;
    let (_, reply) = ask_buyer(&router).await;
    assert_eq!(decision(&reply), Decision::Approved, "{}", reply.reason);
}

#[tokio::test]
async fn the_probe_reconnects_to_a_restarted_router_on_its_own() {
    let mut router = router(&[]).await;
    let bot = HttpBot::start(0).await;
    let probe = Probe::start(&router, "2s", &["--http-url", &bot.url()]).await;
    buyer_where(&router, "a first report", |b| b.last_report.is_some()).await;

    router.restart().await.expect("restart baton-router");
    let back_at = now_ms();
    let observed_at = |b: &Bot| b.last_report.as_ref().map_or(0, |r| r.observed_at_unix_ms);
    let first = buyer_where(&router, "a report made after the restart", |b| {
        observed_at(b) > back_at
    })
    .await;
    let next = buyer_where(&router, "reports still advancing", |b| {
        observed_at(b) > observed_at(&first)
    })
    .await;
    assert_eq!(health(&next), BotHealth::Healthy);
    let status = probe.healthz().await;
    assert_eq!(
        json_str(&status, "router"),
        Some(router.endpoint().as_str()),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posting_observations_never_waits_and_overflow_is_dropped_and_counted() {
    let router = router(&[]).await;
    // Passive only, a one-slot queue, a window longer than the test.
    let probe = Probe::start(&router, "60s", &["--queue-capacity", "1"]).await;
    let addr = probe.addr;
    let posted = Arc::new(AtomicU64::new(0));
    eventually("observations dropped", DEADLINE, || {
        let posted = Arc::clone(&posted);
        let probe = &probe;
        async move {
            let burst: Vec<_> = (0..32)
                .map(|_| {
                    let posted = Arc::clone(&posted);
                    tokio::spawn(async move {
                        for _ in 0..10 {
                            let (status, body) = http(
                                addr,
                                "POST",
                                "/observe",
                                r#"{"latency_ms": 12.5, "ok": true}"#,
                            )
                            .await;
                            assert_eq!(status, 202, "{body}");
                            posted.fetch_add(1, Ordering::SeqCst);
                        }
                    })
                })
                .collect();
            for task in burst {
                task.await.unwrap();
            }
            (json_u64(&probe.healthz().await, "dropped") > 0).then_some(())
        }
    })
    .await;

    let posted = posted.load(Ordering::SeqCst);
    let probe = &probe;
    let status = eventually("the queue drained", DEADLINE, move || async move {
        let status = probe.healthz().await;
        (json_u64(&status, "samples") == json_u64(&status, "observed")).then_some(status)
    })
    .await;
    let (observed, dropped) = (json_u64(&status, "observed"), json_u64(&status, "dropped"));
    assert!(dropped > 0, "{status}");
    assert_eq!(observed + dropped, posted, "{status}");

    let bad = http(addr, "POST", "/observe", "{\"latency_ms\": \"soon\"}").await;
    assert_eq!(bad.0, 400, "{}", bad.1);
    assert!(bad.1.contains("invalid observation"), "{}", bad.1);

    // What was kept reaches the router.
    buyer_where(&router, "a report of every kept observation", |b| {
        samples(b) == observed
    })
    .await;
}

#[tokio::test]
async fn a_probe_reports_to_a_secured_router_with_its_token_and_logs_a_refusal() {
    const PROBE_TOKEN: &str = "buyer-probe-token-e2e";
    const OPERATOR_TOKEN: &str = "operator-token-e2e";
    let dir = TempDir::new("probe-auth");
    let file = dir.path().join("baton.toml");
    std::fs::write(
        &file,
        "[[auth.principals]]\nrole = \"probe:buyer\"\ntoken_env = \"TEST_PROBE_TOKEN\"\n\
         [[auth.principals]]\nrole = \"operator\"\ntoken_env = \"TEST_OPERATOR_TOKEN\"\n",
    )
    .unwrap();
    let file = file.display().to_string();
    let router = Router::start_with_env(
        router_bin(),
        &["--config", &file],
        &[
            ("TEST_PROBE_TOKEN", PROBE_TOKEN),
            ("TEST_OPERATOR_TOKEN", OPERATOR_TOKEN),
        ],
    )
    .await
    .expect("start a secured router");
    let bot = HttpBot::start(0).await;
    let url = bot.url();
    let _probe = Probe::start_with_env(
        &router,
        "2s",
        &["--http-url", &url],
        &[("BATON_PROBE_TOKEN", PROBE_TOKEN)],
    )
    .await;

    let channel = Channel::from_shared(router.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let operator = move |mut r: tonic::Request<()>| {
        let value = format!("Bearer {OPERATOR_TOKEN}")
            .parse()
            .expect("header value");
        r.metadata_mut().insert("authorization", value);
        Ok(r)
    };
    let admin = AdminServiceClient::with_interceptor(channel, operator);
    eventually("a report through the secured router", DEADLINE, || {
        let mut admin = admin.clone();
        async move {
            let bots = admin
                .list_bots(ListBotsRequest {})
                .await
                .ok()?
                .into_inner()
                .bots;
            let buyer = bots.into_iter().find(|b| b.id == "buyer")?;
            (samples(&buyer) >= 20 && health(&buyer) == BotHealth::Healthy).then_some(())
        }
    })
    .await;

    let intruder = Probe::start_with_env(
        &router,
        "2s",
        &["--http-url", &url],
        &[("BATON_PROBE_TOKEN", "not-the-token")],
    )
    .await;
    eventually("the refusal in the probe's log", DEADLINE, || {
        let refused = intruder.logged(&["the router rejected a report", "Unauthenticated"]);
        async move { refused.then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn a_slow_bot_defers_the_handoff_and_its_recovery_delivers_it_on_watch_handoffs() {
    let bot = HttpBot::start(0).await;
    // buyer's limit becomes 0.1 x 1800 ms = 180 ms: a 300 ms bot is slow.
    let router = router(&[
        "--set",
        "health.sla_factor=0.1",
        "--set",
        "health.min_samples=5",
    ])
    .await;
    let _probe = Probe::start(&router, "1s", &["--http-url", &bot.url()]).await;
    buyer_where(&router, "a healthy buyer", |b| {
        health(b) == BotHealth::Healthy && samples(b) >= 5
    })
    .await;
    let mut handoff = router.handoff().await;
    let buy = |contact: &str| request(contact, "lead", "I want to buy a house");
    let reply = handoff
        .request_handoff(buy("slow-0"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decision(&reply), Decision::Approved, "{}", reply.reason);

    let mut incoming = handoff
        .watch_handoffs(baton_proto::v1::WatchHandoffsRequest {
            bot: "buyer".into(),
        })
        .await
        .unwrap()
        .into_inner();
    bot.delay_ms(300);
    // Within a few report intervals (100 ms each) a request is deferred.
    let mut attempt = 0;
    let deferred = eventually("a deferred handoff", Duration::from_secs(3), || {
        attempt += 1;
        let contact = format!("slow-{attempt}");
        let mut handoff = handoff.clone();
        async move {
            let reply = handoff
                .request_handoff(buy(&contact))
                .await
                .ok()?
                .into_inner();
            (decision(&reply) == Decision::DeferredUnhealthy).then_some(contact)
        }
    })
    .await;

    bot.delay_ms(0);
    // The router completes it by itself once the buyer is healthy again.
    let pushed = pushed_for(&mut incoming, &deferred).await;
    assert_eq!(
        (pushed.source_bot.as_str(), pushed.target_bot.as_str()),
        ("lead", "buyer")
    );
    let contact = router
        .admin()
        .await
        .get_contact(baton_proto::v1::GetContactRequest {
            contact_id: deferred.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(contact.owner, "buyer");
    let deferral = contact.deferral.unwrap();
    assert_eq!(
        (deferral.status.as_str(), deferral.handoff_id.as_str()),
        ("COMPLETED", pushed.handoff_id.as_str())
    );
    let completed = deferral_completed(&router, &deferred).await;
    assert_eq!(completed.handoff_id, pushed.handoff_id);
}

#[tokio::test]
async fn a_probe_reports_to_a_tls_router_it_trusts() {
    let dir = TempDir::new("probe-tls");
    let (ca, cert, key) = crate::auth::certificates(&dir, "router");
    let trust = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            std::fs::read(&ca).unwrap(),
        ))
        .domain_name("localhost");
    let router = Router::start_tls(
        router_bin(),
        &["--tls-cert", &cert, "--tls-key", &key],
        trust,
    )
    .await
    .unwrap();
    let bot = HttpBot::start(0).await;
    let probe = Probe::start(&router, "1s", &["--http-url", &bot.url(), "--tls-ca", &ca]).await;
    let buyer = buyer_where(&router, "a report over TLS", |b| samples(b) > 0).await;
    assert_eq!(health(&buyer), BotHealth::Healthy);
    assert!(probe.healthz().await.contains("https://"));
}
