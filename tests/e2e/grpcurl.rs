//! The operator path as a user walks it: the real `grpcurl` binary, with
//! nothing but server reflection, calling every RPC (the README's recipes).

use std::process::{Command, Output, Stdio};

use crate::router;

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

    let watch = Command::new(grpcurl())
        .args([
            "-plaintext",
            "-max-time",
            "5",
            "-d",
            r#"{"skip_stay": true}"#,
            addr,
            "baton.v1.AdminService/WatchDecisions",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let incoming = Command::new(grpcurl())
        .args([
            "-plaintext",
            "-max-time",
            "5",
            "-d",
            r#"{"bot": "seller"}"#,
            addr,
            "baton.v1.HandoffService/WatchHandoffs",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500)); // let both subscribe: grpcurl gives no signal

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

    let watched = String::from_utf8_lossy(&watch.wait_with_output().unwrap().stdout).into_owned();
    assert!(watched.contains(&handoff), "{watched}");
    let pushed = String::from_utf8_lossy(&incoming.wait_with_output().unwrap().stdout).into_owned();
    assert!(
        pushed.contains(&handoff) && pushed.contains("3 months"),
        "{pushed}"
    );
}
