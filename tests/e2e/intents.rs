//! SPEC §2.2 over real gRPC: the built-in model routes English and Spanish
//! lead messages; a team trains its own model with `baton-router train`
//! and serves it through `classifier.model`; a damaged model file stops
//! the router with a message naming it.

use std::process::Command;

use baton_proto::v1::Decision;
use baton_test_support::TempDir;

use crate::{decision, request, router, router_bin};

#[tokio::test]
async fn spanish_lead_messages_are_routed_by_the_builtin_model() {
    let r = router(&["--memory"]).await;
    let mut h = r.handoff().await;

    let sell = h
        .request_handoff(request(
            "es-1",
            "lead",
            "Hola, quiero vender mi casa este año",
        ))
        .await
        .expect("RequestHandoff")
        .into_inner();
    assert_eq!(
        (decision(&sell), sell.target_bot.as_str()),
        (Decision::Approved, "seller")
    );

    let both = h
        .request_handoff(request(
            "es-2",
            "lead",
            "Quiero vender mi casa y comprar una más pequeña",
        ))
        .await
        .expect("RequestHandoff")
        .into_inner();
    assert_eq!(
        (decision(&both), both.target_bot.as_str()),
        (Decision::Approved, "seller")
    );
    let context = both.context.expect("merged context");
    assert_eq!(context.pending_intents, vec!["buyer".to_owned()]);

    let negated = h
        .request_handoff(request("es-3", "lead", "no quiero vender mi casa, gracias"))
        .await
        .expect("RequestHandoff")
        .into_inner();
    assert_eq!(decision(&negated), Decision::Stay);
}

#[tokio::test]
async fn a_long_message_is_judged_by_its_sentences_not_its_length() {
    let r = router(&["--memory"]).await;
    let mut h = r.handoff().await;
    let chat = [
        "Gracias por la información, lo voy a platicar con mi esposa esta noche.",
        "Hace muy buen tiempo esta semana, fuimos a la playa el domingo.",
        "Mis hijos empiezan la escuela el mes que viene así que andamos ocupados.",
        "El fin de semana hicimos una carne asada con los vecinos.",
    ];
    // Chat up to the 8 KiB limit, no intent in any sentence: it stays.
    let mut long = String::new();
    for s in chat.iter().cycle() {
        if long.len() + s.len() >= 8 * 1024 {
            break;
        }
        long.push_str(s);
        long.push(' ');
    }
    let stay = h
        .request_handoff(request("long-1", "lead", &long))
        .await
        .expect("RequestHandoff")
        .into_inner();
    assert_eq!(decision(&stay), Decision::Stay, "{}", stay.reason);

    // One sentence among the chat wants to sell: that is the decision.
    let buried = format!(
        "{} {} Por cierto, queremos vender la casa antes del verano. {} {}",
        chat[0], chat[1], chat[2], chat[3]
    );
    let sell = h
        .request_handoff(request("long-2", "lead", &buried))
        .await
        .expect("RequestHandoff")
        .into_inner();
    assert_eq!(
        (decision(&sell), sell.target_bot.as_str()),
        (Decision::Approved, "seller"),
        "{}",
        sell.reason
    );
}

const SUPPORT_CORPUS: &str = include_str!("../../crates/train/tests/support_corpus.jsonl");

const SUPPORT_CONFIG: &str = r#"
[policy]
priority = ["billing", "sales"]

[classifier]
escalate = ["human"]

[[bots]]
id = "support"
sla_p95 = "1s"

[[bots]]
id = "billing"
sla_p95 = "1s"

[[bots]]
id = "sales"
sla_p95 = "1s"
"#;

#[tokio::test]
async fn a_team_trains_its_own_model_and_serves_it_without_a_rebuild() {
    let dir = TempDir::new("support-model");
    let corpus = dir.path().join("support.jsonl");
    let model = dir.path().join("support.model");
    let config = dir.path().join("support.toml");
    std::fs::write(&corpus, SUPPORT_CORPUS).unwrap();
    std::fs::write(&config, SUPPORT_CONFIG).unwrap();
    let out = Command::new(router_bin())
        .args(["train", "--data"])
        .arg(&corpus)
        .arg("--out")
        .arg(&model)
        .arg("--config")
        .arg(&config)
        .args(["--bits", "14", "--folds", "0", "--min-count", "1"])
        .output()
        .expect("run baton-router train");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("classes billing, human, sales"));
    // It tells how long the training messages are, beside the window.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("99% of messages have at most"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let model_set = format!("classifier.model={}", model.display());
    let r = router(&[
        "--memory",
        "--config",
        config.to_str().unwrap(),
        "--set",
        &model_set,
    ])
    .await;
    let mut h = r.handoff().await;
    let refund = h
        .request_handoff(request(
            "t-1",
            "support",
            "I was charged twice, refund please",
        ))
        .await
        .expect("RequestHandoff")
        .into_inner();
    assert_eq!(
        (decision(&refund), refund.target_bot.as_str()),
        (Decision::Approved, "billing")
    );

    let eval = Command::new(router_bin())
        .args(["eval", "--data"])
        .arg(&corpus)
        .arg("--model")
        .arg(&model)
        .arg("--config")
        .arg(&config)
        .args(["--source", "support", "--min-accuracy", "0.9"])
        .output()
        .expect("run baton-router eval");
    let printed = String::from_utf8_lossy(&eval.stdout);
    assert!(eval.status.success(), "{printed}");
    for part in [
        "accuracy",
        "precision",
        "confusion",
        "threshold  accuracy  handoff rate",
    ] {
        assert!(printed.contains(part), "missing '{part}' in\n{printed}");
    }
    // A label the model cannot match: below a 100 % floor, eval exits 1.
    let mislabelled = dir.path().join("mislabelled.jsonl");
    std::fs::write(
        &mislabelled,
        "{\"text\": \"thanks, that fixed it\", \"intent\": \"billing\"}\n",
    )
    .unwrap();
    let floor = Command::new(router_bin())
        .args(["eval", "--data"])
        .arg(&mislabelled)
        .arg("--model")
        .arg(&model)
        .arg("--config")
        .arg(&config)
        .args(["--source", "support", "--min-accuracy", "1.0"])
        .output()
        .expect("run baton-router eval");
    assert_eq!(floor.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&floor.stderr).contains("below --min-accuracy"));
}

#[test]
fn bad_corpus_lines_and_unknown_intents_are_named() {
    let dir = TempDir::new("bad-corpus");
    let corpus = dir.path().join("bad.jsonl");
    std::fs::write(
        &corpus,
        "{\"text\": \"sell\", \"intent\": \"seller\"}\n{\"text\": \"x\", \"intent\": \"landlord\"}\n",
    )
    .unwrap();
    let out = Command::new(router_bin())
        .args(["eval", "--data"])
        .arg(&corpus)
        .output()
        .expect("run eval");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("line 2: unknown intent 'landlord'"), "{err}");

    std::fs::write(
        &corpus,
        "{\"text\": \"sell\", \"intent\": \"seller\"}\nnot json\n",
    )
    .unwrap();
    let out = Command::new(router_bin())
        .args(["train", "--data"])
        .arg(&corpus)
        .args(["--out", "/dev/null"])
        .output()
        .expect("run train");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("line 2: "), "{err}");

    // A window longer than the words a message is read to is refused.
    std::fs::write(&corpus, "{\"text\": \"sell\", \"intent\": \"seller\"}\n").unwrap();
    let out = Command::new(router_bin())
        .args(["train", "--data"])
        .arg(&corpus)
        .args(["--out", "/dev/null", "--window-words", "200"])
        .output()
        .expect("run train");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--window-words 200 is above the 96 words a message is read to"),
        "{err}"
    );
}

#[test]
fn a_damaged_model_file_stops_the_router_naming_the_file() {
    let dir = TempDir::new("bad-model");
    let model = dir.path().join("damaged.model");
    std::fs::write(&model, b"BATONIM\x01 definitely not a model").unwrap();
    let out = Command::new(router_bin())
        .args(["--memory", "--listen", "127.0.0.1:0", "--set"])
        .arg(format!("classifier.model={}", model.display()))
        .output()
        .expect("run baton-router");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("damaged.model"), "{err}");
    assert!(err.contains("classifier.model"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
