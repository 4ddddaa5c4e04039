//! SPEC §2.1: bad input is refused with the field named, showing at most a
//! short prefix of the value, and nothing changes; bytes that are not UTF-8
//! are bad input too. SPEC §6: a bad configuration value stops the router
//! at start, naming its key. And a large context costs linear time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_proto::codec::Codec;
use baton_proto::v1::handoff_service_client::HandoffServiceClient;
use baton_proto::v1::{
    AcknowledgeHandoffRequest, ContextPacket, Decision, GetContactRequest, GetContactResponse,
    Outcome, RecordOutcomeRequest, ReportHealthResponse, RequestHandoffResponse, Signal,
    WatchHandoffsRequest,
};
use baton_test_support::{Process, Router, eventually};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::{decision, request, router, router_bin};

#[tokio::test]
async fn each_bad_field_is_invalid_argument_and_nothing_is_stored() {
    let router = router(&[]).await;
    let mut handoff = router.handoff().await;
    let mut admin = router.admin().await;
    // A contact that exists, owned by the seller bot.
    let reply = handoff
        .request_handoff(request("bad-1", "lead", "I want to sell my house"))
        .await
        .unwrap();
    assert_eq!(decision(reply.get_ref()), Decision::Approved);
    let get = || GetContactRequest {
        contact_id: "bad-1".into(),
    };
    let before = admin.get_contact(get()).await.unwrap().into_inner();

    let signal = |confidence| Signal {
        target_bot: "buyer".into(),
        confidence,
        pattern: String::new(),
    };
    let buy = "I want to buy a house";
    let cases = vec![
        (request("", "seller", buy), "field 'contact_id'"),
        (request("bad-1", "closer", buy), "field 'source_bot'"),
        (
            {
                let mut r = request("bad-1", "seller", buy);
                r.signals = vec![signal(1.5)];
                r
            },
            "field 'signals[0].confidence'",
        ),
        (
            {
                let mut r = request("bad-1", "seller", buy);
                r.signals = vec![signal(f64::NAN)];
                r
            },
            "field 'signals[0].confidence'",
        ),
        (
            request("bad-1", "seller", &"buy a house ".repeat(87_382)),
            "field 'message'",
        ),
    ];
    for (req, field) in cases {
        let status = handoff.request_handoff(req).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{field}: {}",
            status.message()
        );
        assert!(status.message().starts_with(field), "{}", status.message());
    }
    let after = admin.get_contact(get()).await.unwrap().into_inner();
    assert_eq!(after, before);
    // A contact that never existed still does not.
    let status = admin
        .get_contact(GetContactRequest {
            contact_id: "never".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

/// Bytes a client can send that the generated types cannot: `bytes` where
/// `baton.v1` has strings, field numbers as in the real messages.
mod loose {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RequestHandoff {
        #[prost(bytes = "vec", tag = "1")]
        pub contact_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub source_bot: Vec<u8>,
        #[prost(bytes = "vec", tag = "3")]
        pub message: Vec<u8>,
        #[prost(message, optional, tag = "5")]
        pub context: Option<Context>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Context {
        #[prost(bytes = "vec", optional, tag = "2")]
        pub timeline: Option<Vec<u8>>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetContact {
        #[prost(bytes = "vec", tag = "1")]
        pub contact_id: Vec<u8>,
    }

    /// A number where the contact id's string belongs.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NumberedContact {
        #[prost(uint64, tag = "1")]
        pub contact_id: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ReportHealth {
        #[prost(message, optional, tag = "1")]
        pub report: Option<Report>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Report {
        #[prost(bytes = "vec", tag = "1")]
        pub bot: Vec<u8>,
    }
}

/// Calls `path` with `message` encoded as is.
async fn unary_raw<M, R>(router: &Router, path: &'static str, message: M) -> Result<R, Status>
where
    M: prost::Message + Send + Sync + 'static,
    R: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(router.channel().await);
    grpc.ready().await.expect("channel ready");
    grpc.unary(
        tonic::Request::new(message),
        PathAndQuery::from_static(path),
        Codec::<M, R>::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

fn invalid_argument(status: &Status, expected: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert_eq!(status.message(), expected);
}

#[tokio::test]
async fn bytes_that_are_not_utf8_are_invalid_argument_naming_the_field() {
    let router = router(&[]).await;
    let not_utf8 = vec![b'c', 0xC3, 0x28, 0xFF];
    let request = |contact_id: Vec<u8>, timeline: Option<Vec<u8>>| loose::RequestHandoff {
        contact_id,
        source_bot: b"lead".to_vec(),
        message: b"I want to sell my house".to_vec(),
        context: timeline.map(|t| loose::Context { timeline: Some(t) }),
    };
    let status = unary_raw::<_, RequestHandoffResponse>(
        &router,
        "/baton.v1.HandoffService/RequestHandoff",
        request(not_utf8.clone(), None),
    )
    .await
    .unwrap_err();
    invalid_argument(&status, "field 'contact_id' is not valid UTF-8");
    let status = unary_raw::<_, RequestHandoffResponse>(
        &router,
        "/baton.v1.HandoffService/RequestHandoff",
        request(b"utf8-1".to_vec(), Some(not_utf8.clone())),
    )
    .await
    .unwrap_err();
    invalid_argument(&status, "field 'context.timeline' is not valid UTF-8");
    let status = unary_raw::<_, GetContactResponse>(
        &router,
        "/baton.v1.AdminService/GetContact",
        loose::GetContact {
            contact_id: not_utf8.clone(),
        },
    )
    .await
    .unwrap_err();
    invalid_argument(&status, "field 'contact_id' is not valid UTF-8");
    // A client stream: the probe's report.
    let mut grpc = tonic::client::Grpc::new(router.channel().await);
    grpc.ready().await.expect("channel ready");
    let reports = tokio_stream::iter([loose::ReportHealth {
        report: Some(loose::Report { bot: not_utf8 }),
    }]);
    let status = grpc
        .client_streaming(
            tonic::Request::new(reports),
            PathAndQuery::from_static("/baton.v1.HealthService/ReportHealth"),
            Codec::<loose::ReportHealth, ReportHealthResponse>::default(),
        )
        .await
        .unwrap_err();
    invalid_argument(&status, "field 'report.bot' is not valid UTF-8");
    // Other bytes that do not decode are the client's mistake too.
    let status = unary_raw::<_, RequestHandoffResponse>(
        &router,
        "/baton.v1.HandoffService/RequestHandoff",
        loose::NumberedContact { contact_id: 7 },
    )
    .await
    .unwrap_err();
    invalid_argument(
        &status,
        "field 'contact_id' invalid wire type: Varint (expected LengthDelimited)",
    );
    // The same bytes, valid UTF-8 this time, go through.
    let reply = unary_raw::<_, RequestHandoffResponse>(
        &router,
        "/baton.v1.HandoffService/RequestHandoff",
        request(b"utf8-1".to_vec(), Some(b"3 months".to_vec())),
    )
    .await
    .unwrap();
    assert_eq!(decision(&reply), Decision::Approved);
}

#[tokio::test]
async fn invisible_characters_are_refused_and_spaces_are_not() {
    let router = router(&[]).await;
    let mut handoff = router.handoff().await;
    for (id, code_point) in [
        ("evil\u{202E}1", "U+202E"),
        ("zero\u{200B}width", "U+200B"),
        ("\u{FEFF}bom", "U+FEFF"),
        ("line\u{2028}sep", "U+2028"),
        ("private\u{E000}", "U+E000"),
    ] {
        let status = handoff
            .request_handoff(request(id, "lead", "I want to sell my house"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{id:?}");
        assert!(
            status
                .message()
                .starts_with("field 'contact_id' must be printable text, has ")
                && status.message().contains(code_point),
            "{}",
            status.message()
        );
    }
    let reply = handoff
        .request_handoff(request("José Núñez 42", "lead", "I want to sell my house"))
        .await
        .unwrap();
    assert_eq!(decision(reply.get_ref()), Decision::Approved);
}

#[tokio::test]
async fn handoff_ids_and_patterns_are_bounded_and_errors_echo_a_prefix() {
    let router = router(&[]).await;
    let mut handoff = router.handoff().await;
    let huge = "h".repeat(1 << 20);
    let status = handoff
        .acknowledge_handoff(AcknowledgeHandoffRequest {
            handoff_id: huge.clone(),
            bot: "seller".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    invalid_argument(
        &status,
        "field 'handoff_id' is 1048576 bytes, more than 192",
    );
    let status = handoff
        .record_outcome(RecordOutcomeRequest {
            handoff_id: huge.clone(),
            outcome: Outcome::Failed as i32,
        })
        .await
        .unwrap_err();
    invalid_argument(
        &status,
        "field 'handoff_id' is 1048576 bytes, more than 192",
    );
    let mut with_pattern = request("pattern-1", "lead", "hello");
    with_pattern.signals = vec![Signal {
        target_bot: "buyer".into(),
        confidence: 0.9,
        pattern: huge.clone(),
    }];
    let status = handoff.request_handoff(with_pattern).await.unwrap_err();
    invalid_argument(
        &status,
        "field 'signals[0].pattern' is 1048576 bytes, more than 128",
    );
    // A 1 MiB bot name comes back as its first 64 characters.
    let status = handoff
        .request_handoff(request("echo-1", &huge, "hello"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        format!(
            "field 'source_bot' '{}…' is not a configured bot",
            "h".repeat(64)
        )
    );
    let status = handoff
        .watch_handoffs(WatchHandoffsRequest { bot: huge })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().len() < 200, "{}", status.message());
}

/// One approval of a new contact, with `questions` answered; its latency.
async fn approval_time(
    handoff: &mut HandoffServiceClient<Channel>,
    contact: &str,
    questions: &[String],
) -> Duration {
    let mut req = request(contact, "lead", "I want to sell my house");
    req.context = Some(ContextPacket {
        answered_questions: questions.to_vec(),
        ..Default::default()
    });
    let started = Instant::now();
    let reply = handoff.request_handoff(req).await.unwrap().into_inner();
    let took = started.elapsed();
    assert_eq!(decision(&reply), Decision::Approved, "{}", reply.reason);
    let merged = reply.context.unwrap_or_default().answered_questions;
    assert_eq!(merged.len(), questions.len());
    took
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// SPEC §2 (context merge): 10,000 distinct answered questions, 59 KB and
/// within the context limit, once cost ~500× a small approval. Measured
/// against a small one in the same run, interleaved, medians of seven.
#[tokio::test]
async fn a_ten_thousand_question_context_approves_within_twenty_times_a_small_one() {
    let router = router(&[]).await;
    let mut handoff = router.handoff().await;
    let large: Vec<String> = (0..10_000).map(|i| i.to_string()).collect();
    let small = vec!["timeline".to_owned()];
    // Warm up connections, caches and the store.
    approval_time(&mut handoff, "warm-small", &small).await;
    approval_time(&mut handoff, "warm-large", &large).await;
    let (mut small_times, mut large_times) = (Vec::new(), Vec::new());
    for round in 0..7 {
        small_times.push(approval_time(&mut handoff, &format!("small-{round}"), &small).await);
        large_times.push(approval_time(&mut handoff, &format!("large-{round}"), &large).await);
    }
    let (small, large) = (median(small_times), median(large_times));
    eprintln!(
        "approval: small context {small:?}, 10,000 questions {large:?} ({:.1}x)",
        large.as_secs_f64() / small.as_secs_f64()
    );
    assert!(
        large <= small * 20,
        "10,000 questions took {large:?}, more than 20 x {small:?}"
    );
}

/// Starts the router; it must exit with an error at once, printing
/// `expected` (the key, or what set it), and not panic.
async fn refuses_to_start(args: &[&str], env: &[(&str, &str)], expected: &[&str]) {
    let mut cmd = std::process::Command::new(router_bin());
    for (name, _) in std::env::vars() {
        if name.starts_with("BATON_") {
            cmd.env_remove(name);
        }
    }
    cmd.args(["--memory", "--listen", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied());
    let output = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&output);
    let mut process = Process::spawn("baton-router", cmd, move |line| {
        let mut text = sink.lock().unwrap_or_else(|p| p.into_inner());
        text.push_str(line);
        text.push('\n');
    })
    .expect("spawn baton-router");
    let status = process.wait(Duration::from_secs(20)).await;
    assert!(!status.success(), "{args:?} {env:?} started");
    let said = |text: &str| expected.iter().all(|e| text.contains(e));
    eventually("the router to say why", Duration::from_secs(10), || {
        let text = output.lock().unwrap_or_else(|p| p.into_inner()).clone();
        async move { said(&text).then_some(()) }
    })
    .await;
    let text = output.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(!text.contains("panicked"), "{text}");
}

#[tokio::test]
async fn silent_bad_configuration_stops_the_router_naming_the_key() {
    refuses_to_start(
        &["--set", "server.watch_buffer=4611686018427387904"],
        &[],
        &[
            "--set server.watch_buffer",
            "config key 'server.watch_buffer'",
        ],
    )
    .await;
    refuses_to_start(
        &[],
        &[("BATON_POLICY__CONTEXT_TTL", "1000000000y")],
        &[
            "environment variable BATON_POLICY__CONTEXT_TTL",
            "config key 'policy.context_ttl'",
        ],
    )
    .await;
    refuses_to_start(
        &["--set", "limits.message_bytes=0"],
        &[],
        &["config key 'limits.message_bytes' must be above zero"],
    )
    .await;
    refuses_to_start(
        &[
            "--set",
            r#"auth.principals=[{ role = "bot:ghost", token_env = "BATON_TEST_GHOST" }]"#,
        ],
        &[("BATON_TEST_GHOST", "secret")],
        &["config key 'auth.principals[0].role' 'bot:ghost'"],
    )
    .await;
    refuses_to_start(
        &[
            "--set",
            r#"routes=[{ from = "lead", to = "buyer", threshold = 0.4 }]"#,
        ],
        &[],
        &["config key 'routes[0].threshold'"],
    )
    .await;
    refuses_to_start(
        &["--set", "policy.rate_window_short=0s"],
        &[],
        &["config key 'policy.rate_window_short'"],
    )
    .await;
}
