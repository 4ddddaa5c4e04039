//! SPEC §6: tokens with roles, TLS and rate limits, over real gRPC against
//! the built router.

use std::process::Command;

use baton_proto::v1::admin_service_client::AdminServiceClient;
use baton_proto::v1::handoff_service_client::HandoffServiceClient;
use baton_proto::v1::health_service_client::HealthServiceClient;
use baton_proto::v1::*;
use baton_test_support::{Router, TempDir};
use sha2::{Digest, Sha256};
use tokio_stream::StreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::{Code, Request, Status};

use crate::router_bin;

const LEAD: &str = "lead-token-0123";
const SELLER: &str = "seller-token-4567";
const PROBE: &str = "buyer-probe-token-89ab";
const OPERATOR: &str = "operator-token-cdef";

/// A router whose four principals take their tokens from each of the three sources.
async fn secured(dir: &TempDir, extra: &[&str]) -> Router {
    let sha: String = Sha256::digest(LEAD)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(dir.path().join("seller"), SELLER).unwrap();
    std::fs::write(dir.path().join("operator"), format!("{OPERATOR}\n")).unwrap();
    let config = format!(
        r#"
[[auth.principals]]
role = "bot:lead"
token_sha256 = "{sha}"
[[auth.principals]]
role = "bot:seller"
token_file = "{dir}/seller"
[[auth.principals]]
role = "probe:buyer"
token_env = "TEST_BUYER_PROBE_TOKEN"
[[auth.principals]]
role = "operator"
token_file = "{dir}/operator"
"#,
        dir = dir.path().display()
    );
    let file = dir.path().join("baton.toml");
    std::fs::write(&file, config).unwrap();
    let file = file.display().to_string();
    let mut args = vec!["--config", file.as_str()];
    args.extend_from_slice(extra);
    Router::start_with_env(router_bin(), &args, &[("TEST_BUYER_PROBE_TOKEN", PROBE)])
        .await
        .expect("start a secured router")
}

type Auth = Box<dyn FnMut(Request<()>) -> Result<Request<()>, Status> + Send + Sync>;

fn bearer(token: Option<&'static str>) -> Auth {
    Box::new(move |mut r: Request<()>| {
        if let Some(t) = token {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        Ok(r)
    })
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Rpc {
    RequestHandoff,
    GetContext,
    AcknowledgeHandoff,
    RecordOutcome,
    WatchHandoffs,
    ReportHealth,
    GetContact,
    ListBots,
    GetStats,
    ReleaseContact,
    WatchDecisions,
}

const RPCS: [Rpc; 11] = [
    Rpc::RequestHandoff,
    Rpc::GetContext,
    Rpc::AcknowledgeHandoff,
    Rpc::RecordOutcome,
    Rpc::WatchHandoffs,
    Rpc::ReportHealth,
    Rpc::GetContact,
    Rpc::ListBots,
    Rpc::GetStats,
    Rpc::ReleaseContact,
    Rpc::WatchDecisions,
];

/// Calls `rpc` acting as the lead bot / the buyer's probe; the status code
/// it ends with (`Ok` when it succeeded).
async fn call(channel: &Channel, token: Option<&'static str>, rpc: Rpc) -> Code {
    let mut handoff = HandoffServiceClient::with_interceptor(channel.clone(), bearer(token));
    let mut admin = AdminServiceClient::with_interceptor(channel.clone(), bearer(token));
    let mut health = HealthServiceClient::with_interceptor(channel.clone(), bearer(token));
    let contact = "owned-by-lead".to_owned();
    let result: Result<(), Status> = match rpc {
        Rpc::RequestHandoff => {
            let req = RequestHandoffRequest {
                contact_id: contact,
                source_bot: "lead".into(),
                message: "hello".into(),
                ..Default::default()
            };
            handoff.request_handoff(req).await.map(drop)
        }
        Rpc::GetContext => {
            let req = GetContextRequest {
                contact_id: contact,
                bot: "lead".into(),
            };
            handoff.get_context(req).await.map(drop)
        }
        Rpc::AcknowledgeHandoff => {
            let req = AcknowledgeHandoffRequest {
                contact_id: contact,
                handoff_id: "no-such".into(),
                bot: "lead".into(),
            };
            handoff.acknowledge_handoff(req).await.map(drop)
        }
        Rpc::RecordOutcome => {
            let req = RecordOutcomeRequest {
                handoff_id: "no-such".into(),
                outcome: Outcome::Successful as i32,
            };
            handoff.record_outcome(req).await.map(drop)
        }
        Rpc::WatchHandoffs => handoff
            .watch_handoffs(WatchHandoffsRequest { bot: "lead".into() })
            .await
            .map(drop),
        Rpc::ReportHealth => {
            let report = HealthReport {
                bot: "buyer".into(),
                sample_count: 5,
                ..Default::default()
            };
            let stream = tokio_stream::iter(vec![ReportHealthRequest {
                report: Some(report),
            }]);
            health.report_health(stream).await.map(drop)
        }
        Rpc::GetContact => admin
            .get_contact(GetContactRequest {
                contact_id: contact,
            })
            .await
            .map(drop),
        Rpc::ListBots => admin.list_bots(ListBotsRequest {}).await.map(drop),
        Rpc::GetStats => admin.get_stats(GetStatsRequest {}).await.map(drop),
        Rpc::ReleaseContact => {
            let req = ReleaseContactRequest {
                contact_id: contact,
                owner: "lead".into(),
                reason: "test".into(),
            };
            admin.release_contact(req).await.map(drop)
        }
        Rpc::WatchDecisions => admin
            .watch_decisions(WatchDecisionsRequest::default())
            .await
            .map(drop),
    };
    result.err().map_or(Code::Ok, |s| s.code())
}

/// What an allowed call ends with: the unknown handoff is NOT_FOUND.
fn allowed(rpc: Rpc) -> Code {
    match rpc {
        Rpc::AcknowledgeHandoff | Rpc::RecordOutcome => Code::NotFound,
        _ => Code::Ok,
    }
}

#[tokio::test]
async fn every_role_may_call_what_it_should_and_nothing_else() {
    let dir = TempDir::new("auth");
    let router = secured(&dir, &[]).await;
    let channel = router.channel().await;
    // A contact owned by the lead bot: escalated, then released back by an operator.
    let mut lead = HandoffServiceClient::with_interceptor(channel.clone(), bearer(Some(LEAD)));
    let escalate = RequestHandoffRequest {
        contact_id: "owned-by-lead".into(),
        source_bot: "lead".into(),
        message: "can I talk to a real person".into(),
        ..Default::default()
    };
    lead.request_handoff(escalate).await.unwrap();
    let mut operator =
        AdminServiceClient::with_interceptor(channel.clone(), bearer(Some(OPERATOR)));
    let release = ReleaseContactRequest {
        contact_id: "owned-by-lead".into(),
        owner: "lead".into(),
        reason: "setup".into(),
    };
    operator.release_contact(release).await.unwrap();

    use Rpc::*;
    let bot_rpcs = [
        RequestHandoff,
        GetContext,
        AcknowledgeHandoff,
        RecordOutcome,
        WatchHandoffs,
    ];
    let admin_rpcs = [
        GetContact,
        ListBots,
        GetStats,
        ReleaseContact,
        WatchDecisions,
    ];
    for rpc in RPCS {
        let expect = |permitted: bool| {
            if permitted {
                allowed(rpc)
            } else {
                Code::PermissionDenied
            }
        };
        let cases = [
            (None, Code::Unauthenticated),
            (Some("not-a-token"), Code::Unauthenticated),
            (Some(LEAD), expect(bot_rpcs.contains(&rpc))),
            // The seller's token may not act as the lead bot (RecordOutcome names no bot).
            (Some(SELLER), expect(rpc == RecordOutcome)),
            (Some(PROBE), expect(rpc == ReportHealth)),
            (
                Some(OPERATOR),
                expect(admin_rpcs.contains(&rpc) || rpc == RecordOutcome),
            ),
        ];
        for (token, code) in cases {
            assert_eq!(
                call(&channel, token, rpc).await,
                code,
                "{rpc:?} with {token:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_probe_reporting_for_another_bot_is_refused_and_not_applied() {
    let dir = TempDir::new("auth");
    let router = secured(&dir, &[]).await;
    let channel = router.channel().await;
    let mut probe = HealthServiceClient::with_interceptor(channel.clone(), bearer(Some(PROBE)));
    let report = HealthReport {
        bot: "seller".into(),
        sample_count: 100,
        p95_ms: 9000.0,
        ..Default::default()
    };
    let stream = tokio_stream::iter(vec![ReportHealthRequest {
        report: Some(report),
    }]);
    let status = probe.report_health(stream).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("'seller'"),
        "{}",
        status.message()
    );
    let mut operator = AdminServiceClient::with_interceptor(channel, bearer(Some(OPERATOR)));
    let bots = operator
        .list_bots(ListBotsRequest {})
        .await
        .unwrap()
        .into_inner()
        .bots;
    assert!(bots.iter().all(|b| b.last_report.is_none()), "{bots:?}");
}

#[tokio::test]
async fn reflection_and_health_stay_open() {
    let dir = TempDir::new("auth");
    let router = secured(&dir, &[]).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(router.channel().await);
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    let mut reflection =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
            router.channel().await,
        );
    let ask = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter(vec![ask]))
        .await
        .unwrap()
        .into_inner();
    assert!(replies.next().await.unwrap().is_ok());
}

#[tokio::test]
async fn a_principal_over_its_rate_is_refused_while_another_is_not() {
    let dir = TempDir::new("auth");
    let router = secured(
        &dir,
        &[
            "--set",
            "server.rate_per_principal=1",
            "--set",
            "server.rate_burst=5",
        ],
    )
    .await;
    let channel = router.channel().await;
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(call(&channel, Some(LEAD), Rpc::RequestHandoff).await);
    }
    assert_eq!(codes[..5], [Code::Ok; 5]);
    assert_eq!(codes[5], Code::ResourceExhausted);
    assert_eq!(
        call(&channel, Some(OPERATOR), Rpc::ListBots).await,
        Code::Ok
    );
}

#[tokio::test]
async fn without_tokens_a_non_loopback_address_is_refused_unless_allowed() {
    let out = Command::new(router_bin())
        .args(["--memory", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--insecure-allow-remote"), "{stderr}");
}

/// A CA and a server certificate for localhost/127.0.0.1, made with openssl.
pub(crate) fn certificates(dir: &TempDir, name: &str) -> (String, String, String) {
    let path = |f: &str| dir.path().join(format!("{name}-{f}")).display().to_string();
    let run = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl (scripts/test installs it)");
        assert!(
            status.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&status.stderr)
        );
    };
    let (ca_key, ca, key, csr, cert, ext) = (
        path("ca.key"),
        path("ca.pem"),
        path("key.pem"),
        path("csr.pem"),
        path("cert.pem"),
        path("ext.cnf"),
    );
    std::fs::write(&ext, "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &ca_key,
        "-out",
        &ca,
        "-days",
        "2",
        "-subj",
        &format!("/CN={name} test CA"),
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &csr,
        "-subj",
        "/CN=localhost",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        &cert,
        "-days",
        "2",
        "-extfile",
        &ext,
    ]);
    (ca, cert, key)
}

#[tokio::test]
async fn tls_admits_clients_that_trust_the_ca_and_no_one_else() {
    let dir = TempDir::new("tls");
    let (ca, cert, key) = certificates(&dir, "good");
    let (other_ca, _, _) = certificates(&dir, "other");
    let trust = |pem: &str| {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(pem).unwrap()))
            .domain_name("localhost")
    };
    let router = Router::start_tls(
        router_bin(),
        &["--tls-cert", &cert, "--tls-key", &key],
        trust(&ca),
    )
    .await
    .expect("start a TLS router");
    let trusted = router.channel().await;
    assert_eq!(call(&trusted, None, Rpc::ListBots).await, Code::Ok);

    let plain = Channel::from_shared(format!("http://{}", router.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert_ne!(call(&plain, None, Rpc::ListBots).await, Code::Ok);
    let untrusted = Channel::from_shared(format!("https://{}", router.addr))
        .unwrap()
        .tls_config(trust(&other_ca))
        .unwrap()
        .connect()
        .await;
    assert!(
        untrusted.is_err(),
        "a client with an untrusted CA connected"
    );
}

#[tokio::test]
async fn requests_above_the_size_limit_are_refused() {
    let router = crate::router(&["--set", "server.max_request_bytes=2048"]).await;
    let mut handoff = router.handoff().await;
    let mut big = crate::request("size-1", "lead", &"x".repeat(4096));
    big.request_id = "r".into();
    let status = handoff.request_handoff(big).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status}");
    let small = crate::request("size-1", "lead", "hello");
    assert!(handoff.request_handoff(small).await.is_ok());
}
