//! The operator path as a user walks it: the real `grpcurl` binary, with
//! nothing but server reflection, calling every RPC (the README's recipes).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::router;

/// How long a test waits for a stream opened by grpcurl to show something.
const STREAM_WAIT: Duration = Duration::from_secs(20);

/// A server stream grpcurl holds open (`-v`, so it prints the response
/// headers the moment they arrive), its output collected as it comes.
struct Streaming {
    child: Child,
    output: Arc<Mutex<String>>,
    method: String,
}

impl Streaming {
    fn open(addr: &str, method: &str, body: &str) -> Self {
        let mut child = Command::new(grpcurl())
            .args([
                "-plaintext",
                "-v",
                "-max-time",
                "60",
                "-d",
                body,
                addr,
                method,
            ])
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("grpcurl on PATH (scripts/test installs it; or set BATON_GRPCURL)");
        let output = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = Arc::clone(&output);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut out = sink.lock().unwrap_or_else(|p| p.into_inner());
                out.push_str(&line);
                out.push('\n');
            }
        });
        Self {
            child,
            output,
            method: method.to_owned(),
        }
    }

    /// Waits until the output contains `needle`; the output so far.
    fn wait_for(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let out = self
                .output
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if out.contains(needle) {
                return out;
            }
            assert!(
                start.elapsed() < STREAM_WAIT,
                "{}: no {needle:?} within {STREAM_WAIT:?}; so far: {out}",
                self.method
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn grpcurl() -> String {
    std::env::var("BATON_GRPCURL").unwrap_or_else(|_| "grpcurl".into())
}

fn call(addr: &str, method: &str, body: &str) -> String {
    let out: Output = Command::new(grpcurl())
        .args(["-plaintext", "-d", body, addr, method])
        .output()
        .expect("grpcurl on PATH (scripts/test installs it; or set BATON_GRPCURL)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{method}: {}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn field<'a>(json: &'a str, key: &str) -> &'a str {
    let start = json
        .find(&format!("\"{key}\": \""))
        .unwrap_or_else(|| panic!("{key} in {json}"))
        + key.len()
        + 5;
    &json[start..start + json[start..].find('"').unwrap()]
}

#[tokio::test]
async fn every_rpc_answers_grpcurl_through_reflection_alone() {
    let router = router(&[]).await;
    let addr = router.addr.to_string();
    let addr = addr.as_str();

    let list = Command::new(grpcurl())
        .args(["-plaintext", addr, "list"])
        .output()
        .expect("grpcurl");
    let list = String::from_utf8_lossy(&list.stdout);
    for service in [
        "baton.v1.HandoffService",
        "baton.v1.HealthService",
        "baton.v1.AdminService",
        "grpc.health.v1.Health",
    ] {
        assert!(list.contains(service), "{list}");
    }

    let watch = Streaming::open(
        addr,
        "baton.v1.AdminService/WatchDecisions",
        r#"{"skip_stay": true}"#,
    );
    let incoming = Streaming::open(
        addr,
        "baton.v1.HandoffService/WatchHandoffs",
        r#"{"bot": "seller"}"#,
    );
    // The router subscribes a stream to decisions before it answers with
    // the response headers: once grpcurl has printed them, the stream sees
    // every decision made from then on.
    watch.wait_for("Response headers received");
    incoming.wait_for("Response headers received");

    let health = r#"{"report": {"bot": "seller", "sample_count": 50, "p95_ms": 800, "error_rate": 0.01}}
                    {"report": {"bot": "seller", "sample_count": 60, "p95_ms": 700, "error_rate": 0.0}}"#;
    assert!(
        call(addr, "baton.v1.HealthService/ReportHealth", health).contains("\"accepted\": \"2\"")
    );

    let decided = call(
        addr,
        "baton.v1.HandoffService/RequestHandoff",
        r#"{"contact_id": "c-42", "source_bot": "lead", "message": "I want to sell my house",
            "context": {"timeline": "3 months"}, "request_id": "m-1"}"#,
    );
    assert!(decided.contains("DECISION_APPROVED"), "{decided}");
    let handoff = field(&decided, "handoffId").to_owned();

    let context = call(
        addr,
        "baton.v1.HandoffService/GetContext",
        r#"{"contact_id": "c-42", "bot": "seller"}"#,
    );
    assert!(context.contains("3 months"), "{context}");
    let ack = call(
        addr,
        "baton.v1.HandoffService/AcknowledgeHandoff",
        &format!(r#"{{"contact_id": "c-42", "handoff_id": "{handoff}", "bot": "seller"}}"#),
    );
    assert!(ack.contains("firstAcknowledgement"), "{ack}");
    let outcome = call(
        addr,
        "baton.v1.HandoffService/RecordOutcome",
        &format!(r#"{{"handoff_id": "{handoff}", "outcome": "OUTCOME_SUCCESSFUL"}}"#),
    );
    assert!(outcome.contains("\"recorded\": true"), "{outcome}");
    assert!(
        call(
            addr,
            "baton.v1.AdminService/GetContact",
            r#"{"contact_id": "c-42"}"#
        )
        .contains("\"owner\": \"seller\"")
    );
    assert!(call(addr, "baton.v1.AdminService/ListBots", "{}").contains("BOT_HEALTH_HEALTHY"));
    assert!(call(addr, "baton.v1.AdminService/GetStats", "{}").contains("DECISION_APPROVED"));
    let released = call(
        addr,
        "baton.v1.AdminService/ReleaseContact",
        r#"{"contact_id": "c-42", "owner": "lead", "reason": "demo"}"#,
    );
    assert!(
        released.contains("\"previousOwner\": \"seller\""),
        "{released}"
    );
    let health = call(addr, "grpc.health.v1.Health/Check", "{}");
    assert!(health.contains("SERVING"), "{health}");

    let watched = watch.wait_for(&handoff);
    assert!(watched.contains("DECISION_APPROVED"), "{watched}");
    let pushed = incoming.wait_for(&handoff);
    assert!(pushed.contains("3 months"), "{pushed}");
}
