//! The `baton-probe` binary: flag errors, printed configuration, and a
//! graceful stop on SIGTERM that ends the report stream cleanly.

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use baton_test_support::{Process, eventually};

use crate::support::FakeRouter;

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_baton-probe"));
    // The test's environment must not configure the probe.
    for (name, _) in std::env::vars() {
        if name.starts_with("BATON_PROBE_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

fn fails_with(args: &[&str], expected: &str) {
    let out = bin().args(args).output().expect("run baton-probe");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(stderr.contains(expected), "{args:?}: {stderr}");
}

#[test]
fn bad_flags_exit_with_an_error_naming_the_flag() {
    fails_with(&[], "--bot: is required");
    fails_with(
        &["--bot", "buyer", "--interval", "0s"],
        "--interval: must be above zero",
    );
    fails_with(&["--bot", "buyer", "--interval", "soon"], "--interval");
    fails_with(
        &[
            "--bot",
            "buyer",
            "--http-url",
            "http://a/h",
            "--grpc-health",
            "http://a:1",
        ],
        "--http-url: give one active probe",
    );
    fails_with(
        &["--bot", "buyer", "--router", "ftp://r"],
        "--router: 'ftp://r'",
    );
    let out = bin()
        .args(["--interval", "0s"])
        .env("BATON_PROBE_BOT", "buyer")
        .output()
        .expect("run baton-probe");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--interval: must be above zero"));
}

#[test]
fn print_config_shows_the_effective_values() {
    let out = bin()
        .args(["--bot", "buyer", "--print-config", "--window", "30s"])
        .env("BATON_PROBE_REPORT_EVERY", "5s")
        .output()
        .expect("run baton-probe");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "bot = \"buyer\"",
        "window = \"30s\"",
        "report_every = \"5s\"",
        "interval = \"1s\"",
        "listen = \"127.0.0.1:7401\"",
    ] {
        assert!(text.contains(line), "{line} in:\n{text}");
    }
}

#[tokio::test]
async fn sigterm_closes_the_report_stream_and_exits_zero() {
    let router = FakeRouter::start();
    let mut cmd = bin();
    cmd.args([
        "--bot",
        "buyer",
        "--router",
        &router.url(),
        "--listen",
        "127.0.0.1:0",
        "--report-every",
        "50ms",
    ]);
    let mut probe = Process::spawn("baton-probe", cmd, |_| {}).expect("start baton-probe");
    eventually("reports", Duration::from_secs(20), || {
        let n = router.reports();
        async move { (n >= 2).then_some(()) }
    })
    .await;
    probe.signal("TERM").expect("send SIGTERM");
    let status = probe.wait(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");
    assert_eq!(router.seen.closed.load(Ordering::SeqCst), 1);
}
