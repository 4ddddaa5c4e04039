//! SPEC §6: tokens with roles, TLS and rate limits, over real gRPC against
//! the built router.

use std::process::Command;
use std::time::Duration;

use baton_proto::v1::admin_service_client::AdminServiceClient;
use baton_proto::v1::handoff_service_client::HandoffServiceClient;
use baton_proto::v1::health_service_client::HealthServiceClient;
use baton_proto::v1::*;
use baton_test_support::{Router, TempDir, next_within};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Request, Status};
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::{decision, router_bin};

const LEAD: &str = "lead-token-0123";
const SELLER: &str = "seller-token-4567";
const BUYER: &str = "buyer-token-7654";
const PROBE: &str = "buyer-probe-token-89ab";
const OPERATOR: &str = "operator-token-cdef";
/// How long a test waits for a stream's next message.
const STREAM_WAIT: Duration = Duration::from_secs(10);

/// A router whose five principals take their tokens from each of the three sources.
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
role = "bot:buyer"
token_env = "TEST_BUYER_BOT_TOKEN"
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
    let env = [
        ("TEST_BUYER_PROBE_TOKEN", PROBE),
        ("TEST_BUYER_BOT_TOKEN", BUYER),
    ];
    Router::start_with_env(router_bin(), &args, &env)
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

/// The handoffs the lead bot may act on: one made to it (to acknowledge)
/// and one it made (to record the outcome of). Unknown ids by default.
#[derive(Debug, Clone)]
struct LeadHandoffs {
    to_lead: String,
    from_lead: String,
}

impl Default for LeadHandoffs {
    fn default() -> Self {
        Self {
            to_lead: "no-such".into(),
            from_lead: "no-such".into(),
        }
    }
}

/// Calls `rpc` acting as the lead bot / the buyer's probe; the status code
/// it ends with (`Ok` when it succeeded) and its message.
async fn call(channel: &Channel, token: Option<&'static str>, rpc: Rpc) -> (Code, String) {
    call_with(channel, token, rpc, &LeadHandoffs::default()).await
}

async fn call_with(
    channel: &Channel,
    token: Option<&'static str>,
    rpc: Rpc,
    handoffs: &LeadHandoffs,
) -> (Code, String) {
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
                handoff_id: handoffs.to_lead.clone(),
                bot: "lead".into(),
            };
            handoff.acknowledge_handoff(req).await.map(drop)
        }
        Rpc::RecordOutcome => {
            let req = RecordOutcomeRequest {
                handoff_id: handoffs.from_lead.clone(),
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
    result.err().map_or((Code::Ok, String::new()), |s| {
        (s.code(), s.message().to_owned())
    })
}

#[tokio::test]
async fn every_role_may_call_what_it_should_and_nothing_else() {
    let dir = TempDir::new("auth");
    let router = secured(&dir, &[]).await;
    let channel = router.channel().await;
    // A contact owned by the lead bot: escalated, then released back by an
    // operator. The escalation is a handoff the lead bot made.
    let mut lead = HandoffServiceClient::with_interceptor(channel.clone(), bearer(Some(LEAD)));
    let escalate = RequestHandoffRequest {
        contact_id: "owned-by-lead".into(),
        source_bot: "lead".into(),
        message: "can I talk to a real person".into(),
        ..Default::default()
    };
    let from_lead = lead.request_handoff(escalate).await.unwrap().into_inner();
    assert_eq!(decision(&from_lead), Decision::EscalatedHuman);
    // A handoff made to the lead bot, by the seller's own signal.
    let mut seller = HandoffServiceClient::with_interceptor(channel.clone(), bearer(Some(SELLER)));
    let to_lead = RequestHandoffRequest {
        contact_id: "handed-to-lead".into(),
        source_bot: "seller".into(),
        message: "hello".into(),
        signals: vec![Signal {
            target_bot: "lead".into(),
            confidence: 0.9,
            pattern: "test".into(),
        }],
        ..Default::default()
    };
    let to_lead = seller.request_handoff(to_lead).await.unwrap().into_inner();
    assert_eq!(decision(&to_lead), Decision::Approved);
    let handoffs = LeadHandoffs {
        to_lead: to_lead.handoff_id,
        from_lead: from_lead.handoff_id,
    };
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
    const UNAUTHENTICATED: (Code, &str) = (Code::Unauthenticated, "missing or invalid token");
    for rpc in RPCS {
        // Permitted, or refused with the role the token carries named.
        let expect = |permitted: bool, role: &str| {
            if permitted {
                (Code::Ok, String::new())
            } else {
                (Code::PermissionDenied, format!("a {role} token cannot "))
            }
        };
        // The seller's token may not act as the lead bot, nor record the
        // outcome of a handoff it took no part in.
        let seller = if rpc == RecordOutcome {
            (
                Code::PermissionDenied,
                "only the handoff's source or target bot, or an operator, may record its outcome"
                    .to_owned(),
            )
        } else {
            expect(false, "bot:seller")
        };
        let cases = [
            (None, (UNAUTHENTICATED.0, UNAUTHENTICATED.1.to_owned())),
            (
                Some("not-a-token"),
                (UNAUTHENTICATED.0, UNAUTHENTICATED.1.to_owned()),
            ),
            (Some(LEAD), expect(bot_rpcs.contains(&rpc), "bot:lead")),
            (Some(SELLER), seller),
            (Some(PROBE), expect(rpc == ReportHealth, "probe:buyer")),
            (
                Some(OPERATOR),
                expect(
                    admin_rpcs.contains(&rpc) || rpc == RecordOutcome,
                    "operator",
                ),
            ),
        ];
        for (token, (code, fragment)) in cases {
            let (got, message) = call_with(&channel, token, rpc, &handoffs).await;
            assert_eq!(got, code, "{rpc:?} with {token:?}: {message}");
            if code == Code::Ok {
                assert_eq!(message, "", "{rpc:?} with {token:?}");
            } else {
                assert!(
                    message.starts_with(&fragment),
                    "{rpc:?} with {token:?}: {message:?} does not start with {fragment:?}"
                );
            }
        }
    }
}

/// The handoff service as the holder of `token`.
async fn bot(
    router: &Router,
    token: &'static str,
) -> HandoffServiceClient<tonic::service::interceptor::InterceptedService<Channel, Auth>> {
    HandoffServiceClient::with_interceptor(router.channel().await, bearer(Some(token)))
}

/// Everything a refused caller is told: code, message and details, byte for byte.
fn told(status: Status) -> (Code, String, Vec<u8>) {
    (
        status.code(),
        status.message().to_owned(),
        status.details().to_vec(),
    )
}

fn outcome(handoff_id: &str, outcome: Outcome) -> RecordOutcomeRequest {
    RecordOutcomeRequest {
        handoff_id: handoff_id.into(),
        outcome: outcome as i32,
    }
}

/// SPEC §2.9: only the handoff's source or target bot, or an operator,
/// records its outcome. A bot outside the route is refused and moves no
/// threshold, and the real target's report still counts afterwards.
#[tokio::test]
async fn only_a_handoffs_bots_or_an_operator_record_its_outcome() {
    let dir = TempDir::new("auth");
    let router = secured(&dir, &[]).await;
    let (mut lead, mut seller, mut buyer) = (
        bot(&router, LEAD).await,
        bot(&router, SELLER).await,
        bot(&router, BUYER).await,
    );
    let mut operator =
        HandoffServiceClient::with_interceptor(router.channel().await, bearer(Some(OPERATOR)));
    let mut admin =
        AdminServiceClient::with_interceptor(router.channel().await, bearer(Some(OPERATOR)));
    let mut handoffs = Vec::new();
    for i in 0..12 {
        let req = crate::request(&format!("outcome-{i}"), "lead", "I want to sell my house");
        let reply = lead.request_handoff(req).await.unwrap().into_inner();
        assert_eq!(decision(&reply), Decision::Approved);
        handoffs.push(reply.handoff_id);
    }
    let denied = (
        Code::PermissionDenied,
        "only the handoff's source or target bot, or an operator, may record its outcome, \
         or there is no such handoff"
            .to_owned(),
        Vec::new(),
    );

    // The buyer bot, outside the lead>seller route, tries to poison it.
    for h in &handoffs {
        let status = buyer
            .record_outcome(outcome(h, Outcome::Failed))
            .await
            .unwrap_err();
        assert_eq!(told(status), denied, "{h}");
    }
    let stats = admin.get_stats(GetStatsRequest {}).await.unwrap();
    assert_eq!(stats.into_inner().thresholds, vec![], "nothing was learned");

    // The source, an operator and the target record; each handoff once.
    let recorders = [("lead", &mut lead), ("operator", &mut operator)];
    for ((who, client), h) in recorders.into_iter().zip(&handoffs) {
        let reply = client
            .record_outcome(outcome(h, Outcome::Successful))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (reply.route.as_str(), reply.recorded, reply.threshold),
            ("lead>seller", true, 0.7),
            "{who}"
        );
    }
    let mut thresholds = Vec::new();
    for h in &handoffs[2..] {
        let reply = seller
            .record_outcome(outcome(h, Outcome::Successful))
            .await
            .unwrap()
            .into_inner();
        assert!(reply.recorded, "{h}");
        thresholds.push(reply.threshold);
    }
    // 10 successes of 10 outcomes lower the threshold by 0.05 at the tenth.
    let mut expected = vec![0.7; 7];
    expected.extend([0.65; 3]);
    assert_eq!(thresholds, expected);
    let again = lead
        .record_outcome(outcome(&handoffs[0], Outcome::Failed))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.recorded);
    let status = buyer
        .record_outcome(outcome(&handoffs[0], Outcome::Failed))
        .await
        .unwrap_err();
    assert_eq!(told(status), denied);

    let stats = admin.get_stats(GetStatsRequest {}).await.unwrap();
    let learned = &stats.into_inner().thresholds;
    assert_eq!(
        learned
            .iter()
            .map(|t| (t.route.as_str(), t.outcomes, t.successes, t.threshold))
            .collect::<Vec<_>>(),
        vec![("lead>seller", 12, 12, 0.65)]
    );
}

/// SPEC §6: a bot that may not see a contact or a handoff is told exactly
/// the same whether it exists or not; operators see everything.
#[tokio::test]
async fn a_bot_is_told_the_same_whether_what_it_may_not_see_exists_or_not() {
    let dir = TempDir::new("auth");
    let router = secured(&dir, &[]).await;
    let (mut lead, mut seller, mut buyer) = (
        bot(&router, LEAD).await,
        bot(&router, SELLER).await,
        bot(&router, BUYER).await,
    );
    let mut operator =
        HandoffServiceClient::with_interceptor(router.channel().await, bearer(Some(OPERATOR)));
    let read = |bot: &str| GetContextRequest {
        contact_id: "hidden-1".into(),
        bot: bot.into(),
    };

    // GetContext: before the contact exists, and once it is the seller's.
    let unknown = told(buyer.get_context(read("buyer")).await.unwrap_err());
    let reply = lead
        .request_handoff(crate::request(
            "hidden-1",
            "lead",
            "I want to sell my house",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decision(&reply), Decision::Approved);
    let h = reply.handoff_id;
    let others = told(buyer.get_context(read("buyer")).await.unwrap_err());
    let former = told(lead.get_context(read("lead")).await.unwrap_err());
    let never = GetContextRequest {
        contact_id: "never-1".into(),
        bot: "buyer".into(),
    };
    let never = told(buyer.get_context(never).await.unwrap_err());
    assert_eq!(
        unknown,
        (
            Code::PermissionDenied,
            "the asking bot does not own this contact, or there is no such contact".to_owned(),
            Vec::new()
        )
    );
    assert_eq!((&others, &former, &never), (&unknown, &unknown, &unknown));
    let owner = seller.get_context(read("seller")).await.unwrap();
    assert_eq!(owner.into_inner().owner, "seller");
    // An operator reads any contact (naming no bot) and hears what does not exist.
    let anyone = operator.get_context(read("")).await.unwrap().into_inner();
    assert_eq!(anyone.owner, "seller");
    let missing = GetContextRequest {
        contact_id: "never-1".into(),
        bot: String::new(),
    };
    let missing = operator.get_context(missing).await.unwrap_err();
    assert_eq!(
        (missing.code(), missing.message()),
        (Code::NotFound, "contact 'never-1' not found")
    );

    // AcknowledgeHandoff: the source bot is not told where the contact went.
    let (uuid, _) = h.split_once(':').unwrap();
    let unknown_ids = [
        format!(
            "{}:hidden-1",
            uuid.replace(|c: char| c.is_ascii_digit(), "0")
        ),
        format!("{uuid}:never-1"),
        "no-such".to_owned(),
    ];
    let ack = |handoff_id: &str, bot: &str| AcknowledgeHandoffRequest {
        contact_id: "hidden-1".into(),
        handoff_id: handoff_id.into(),
        bot: bot.into(),
    };
    let not_target = told(lead.acknowledge_handoff(ack(&h, "lead")).await.unwrap_err());
    assert_eq!(
        not_target,
        (
            Code::PermissionDenied,
            "the acknowledging bot is not this handoff's target, or there is no such handoff"
                .to_owned(),
            Vec::new()
        )
    );
    assert_eq!(
        told(
            buyer
                .acknowledge_handoff(ack(&h, "buyer"))
                .await
                .unwrap_err()
        ),
        not_target
    );
    for id in &unknown_ids {
        let status = lead.acknowledge_handoff(ack(id, "lead")).await.unwrap_err();
        assert_eq!(told(status), not_target, "{id}");
        let status = seller
            .acknowledge_handoff(ack(id, "seller"))
            .await
            .unwrap_err();
        assert_eq!(told(status), not_target, "{id}");
    }
    let taken = seller.acknowledge_handoff(ack(&h, "seller")).await.unwrap();
    assert!(taken.into_inner().first_acknowledgement);

    // RecordOutcome: a bot outside the route learns nothing either; an
    // operator hears that an unknown handoff does not exist.
    let third = told(
        buyer
            .record_outcome(outcome(&h, Outcome::Failed))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        third,
        (
            Code::PermissionDenied,
            "only the handoff's source or target bot, or an operator, may record its outcome, \
             or there is no such handoff"
                .to_owned(),
            Vec::new()
        )
    );
    for id in &unknown_ids {
        for (who, client) in [("buyer", &mut buyer), ("lead", &mut lead)] {
            let status = client
                .record_outcome(outcome(id, Outcome::Failed))
                .await
                .unwrap_err();
            assert_eq!(told(status), third, "{who} {id}");
        }
        let status = operator
            .record_outcome(outcome(id, Outcome::Failed))
            .await
            .unwrap_err();
        assert_eq!(
            (status.code(), status.message()),
            (Code::NotFound, format!("handoff '{id}' not found").as_str()),
            "{id}"
        );
    }
    for text in [&others.1, &not_target.1, &third.1] {
        assert!(
            !text.contains("seller") && !text.contains("hidden-1"),
            "{text}"
        );
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
    let reply = next_within(&mut replies, STREAM_WAIT, "reflection reply")
        .await
        .unwrap()
        .expect("a reflection reply")
        .message_response;
    let Some(MessageResponse::ListServicesResponse(list)) = reply else {
        panic!("reflection did not list services: {reply:?}");
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "baton.v1.HandoffService"),
        "{list:?}"
    );
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
    let ok = (Code::Ok, String::new());
    assert_eq!(
        codes[..5],
        [ok.clone(), ok.clone(), ok.clone(), ok.clone(), ok.clone()]
    );
    assert_eq!(
        codes[5],
        (
            Code::ResourceExhausted,
            "rate limit of 1 calls/s exceeded for 'bot:lead'".to_owned()
        )
    );
    assert_eq!(call(&channel, Some(OPERATOR), Rpc::ListBots).await, ok);
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
    assert_eq!(
        call(&trusted, None, Rpc::ListBots).await,
        (Code::Ok, String::new())
    );

    // A plaintext HTTP/2 client gets one fatal TLS alert (decode_error)
    // and a closed connection: not a byte of HTTP/2.
    let mut tcp = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .expect("the router closes the connection")
        .unwrap();
    const DECODE_ERROR_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 50];
    assert_eq!(answer, DECODE_ERROR_ALERT);
    // So a gRPC call over it fails in the client's transport, never in a
    // service. Its code is the client's (UNKNOWN for a broken pipe,
    // INTERNAL when the alert is read as an HTTP/2 frame: a race), hence
    // the check on where the error comes from.
    let plain = Channel::from_shared(format!("http://{}", router.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = AdminServiceClient::new(plain)
        .list_bots(ListBotsRequest {})
        .await
        .unwrap_err();
    let source = std::error::Error::source(&status);
    assert!(
        source.is_some_and(|e| e.is::<tonic::transport::Error>()),
        "{status:?}"
    );

    let untrusted = Channel::from_shared(format!("https://{}", router.addr))
        .unwrap()
        .tls_config(trust(&other_ca))
        .unwrap()
        .connect()
        .await
        .expect_err("a client with an untrusted CA connected");
    let why = format!("{untrusted:?}");
    assert!(why.contains("InvalidCertificate(UnknownIssuer)"), "{why}");
}

#[tokio::test]
async fn requests_above_the_size_limit_are_refused() {
    let router = crate::router(&["--set", "server.max_request_bytes=2048"]).await;
    let mut handoff = router.handoff().await;
    let mut big = crate::request("size-1", "lead", &"x".repeat(4096));
    big.request_id = "r".into();
    let status = handoff.request_handoff(big).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status}");
    assert!(
        status.message().contains("the limit is: 2048 bytes"),
        "{status}"
    );
    let small = crate::request("size-1", "lead", "hello");
    let reply = handoff.request_handoff(small).await.unwrap().into_inner();
    assert_eq!(decision(&reply), Decision::Stay);
}

/// A client TLS configuration that trusts `ca` (PEM file) for localhost and,
/// given a certificate and key (PEM files), presents them.
fn client_tls(ca: &str, identity: Option<(&str, &str)>) -> ClientTlsConfig {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
        .domain_name("localhost");
    match identity {
        Some((cert, key)) => tls.identity(Identity::from_pem(
            std::fs::read(cert).unwrap(),
            std::fs::read(key).unwrap(),
        )),
        None => tls,
    }
}

/// Connects with `tls` and calls ListBots, which must fail. A refused
/// client certificate may fail the handshake (TLS 1.2) or the first call
/// after it (TLS 1.3, where the server checks the client's certificate
/// after the client considers the handshake done); either way no call may
/// be served, and the failure is the transport's, never a service's status.
async fn refused(router: &Router, tls: ClientTlsConfig) {
    let endpoint = Channel::from_shared(router.endpoint())
        .unwrap()
        .tls_config(tls)
        .unwrap();
    let Ok(channel) = endpoint.connect().await else {
        return;
    };
    let status = AdminServiceClient::new(channel)
        .list_bots(ListBotsRequest {})
        .await
        .expect_err("a call was served to a client without a trusted certificate");
    assert!(
        std::error::Error::source(&status).is_some_and(|e| e.is::<tonic::transport::Error>()),
        "the refusal came from a service, not the TLS layer: {status:?}"
    );
}

/// `--tls-client-ca`: only clients presenting a certificate signed by that
/// CA are served; one without a certificate, or with a certificate from
/// another CA, is refused at the TLS layer, and refusing them does not
/// disturb a good client.
#[tokio::test]
async fn client_certificates_from_the_client_ca_are_required() {
    let dir = TempDir::new("mtls");
    let (server_ca, server_cert, server_key) = certificates(&dir, "server");
    let (client_ca, client_cert, client_key) = certificates(&dir, "client");
    let (_, rogue_cert, rogue_key) = certificates(&dir, "rogue");
    let good = client_tls(&server_ca, Some((&client_cert, &client_key)));
    let router = Router::start_tls(
        router_bin(),
        &[
            "--tls-cert",
            &server_cert,
            "--tls-key",
            &server_key,
            "--tls-client-ca",
            &client_ca,
        ],
        good.clone(),
    )
    .await
    .expect("start a router requiring client certificates");

    // A client with a certificate from the client CA: a real call is served.
    let trusted = router.channel().await;
    let served = |bots: Vec<Bot>| bots.into_iter().map(|b| b.id).collect::<Vec<_>>();
    let listed = AdminServiceClient::new(trusted.clone())
        .list_bots(ListBotsRequest {})
        .await
        .expect("a client with a certificate from the client CA is served")
        .into_inner();
    let expected = served(listed.bots.clone());
    assert!(expected.contains(&"seller".to_owned()), "{expected:?}");
    let reply = HandoffServiceClient::new(trusted.clone())
        .request_handoff(crate::request("mtls-1", "lead", "I want to sell my house"))
        .await
        .expect("RequestHandoff with a client certificate")
        .into_inner();
    assert_eq!(decision(&reply), Decision::Approved);

    // No certificate: refused.
    refused(&router, client_tls(&server_ca, None)).await;
    // A certificate the client CA did not sign: refused.
    refused(
        &router,
        client_tls(&server_ca, Some((&rogue_cert, &rogue_key))),
    )
    .await;

    // The good client, on its old connection and on a new one, is still served.
    let again = AdminServiceClient::new(trusted)
        .list_bots(ListBotsRequest {})
        .await
        .expect("the trusted client is still served")
        .into_inner();
    assert_eq!(served(again.bots), expected);
    let fresh = router.channel().await;
    let contact = AdminServiceClient::new(fresh)
        .get_contact(GetContactRequest {
            contact_id: "mtls-1".into(),
        })
        .await
        .expect("a new trusted connection is served")
        .into_inner();
    assert_eq!(contact.owner, "seller");
}
