//! The embedded store under the router: group commit survives `kill -9`
//! mid-load, and retention deletes idle contacts (SPEC §3, §7).

use std::sync::Arc;
use std::time::Duration;

use baton_proto::v1::{
    AcknowledgeHandoffRequest, Decision, GetContactRequest, RecordOutcomeRequest, Signal,
};
use baton_test_support::eventually;
use tokio::sync::Mutex;

use crate::{decision, request, router};

fn handoff_to_seller(contact: &str) -> baton_proto::v1::RequestHandoffRequest {
    let mut req = request(contact, "lead", "quick question");
    req.request_id = format!("{contact}-r");
    req.signals = vec![Signal {
        target_bot: "seller".into(),
        confidence: 0.95,
        pattern: "load".into(),
    }];
    req
}

/// 10 rounds: 16 clients approve new contacts as fast as they can while the
/// router is killed with SIGKILL. After each restart every `APPROVED` answer
/// is there with its handoff indexed (the target can acknowledge it), and
/// every contact that got no answer is either absent or whole: never a
/// contact without its handoff, nor a handoff without its contact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_survive_kill_9_during_batched_load() {
    let mut router = router(&[]).await;
    for round in 0..10 {
        let approved = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
        let tried = Arc::new(Mutex::new(Vec::<String>::new()));
        let mut clients = Vec::new();
        for client in 0..16 {
            let mut handoff = router.handoff().await;
            let (approved, tried) = (Arc::clone(&approved), Arc::clone(&tried));
            clients.push(tokio::spawn(async move {
                for i in 0.. {
                    let contact = format!("k{round}-{client}-{i}");
                    tried.lock().await.push(contact.clone());
                    let Ok(reply) = handoff.request_handoff(handoff_to_seller(&contact)).await
                    else {
                        return;
                    };
                    let reply = reply.into_inner();
                    assert_eq!(decision(&reply), Decision::Approved, "{}", reply.reason);
                    approved.lock().await.push((contact, reply.handoff_id));
                }
            }));
        }
        // Kill once a few hundred approvals have landed, mid-stream.
        eventually("approvals under load", Duration::from_secs(30), || {
            let approved = Arc::clone(&approved);
            async move { (approved.lock().await.len() >= 200).then_some(()) }
        })
        .await;
        router.kill();
        for client in clients {
            client.await.expect("client task");
        }
        router.restart().await.expect("restart");

        let approved = approved.lock().await.clone();
        let mut admin = router.admin().await;
        let mut handoff = router.handoff().await;
        for (contact, handoff_id) in &approved {
            let got = admin
                .get_contact(GetContactRequest {
                    contact_id: contact.clone(),
                })
                .await
                .unwrap_or_else(|e| panic!("round {round}: approved {contact} lost: {e}"))
                .into_inner();
            assert_eq!(got.owner, "seller", "round {round}: {contact}");
            assert_eq!(got.history.len(), 1);
            assert_eq!(&got.history[0].handoff_id, handoff_id);
        }
        // The index of a sample of them, through the target's acknowledgement.
        for (contact, handoff_id) in approved.iter().step_by(25) {
            let ack = AcknowledgeHandoffRequest {
                contact_id: contact.clone(),
                handoff_id: handoff_id.clone(),
                bot: "seller".into(),
            };
            handoff
                .acknowledge_handoff(ack)
                .await
                .unwrap_or_else(|e| panic!("round {round}: ack {handoff_id}: {e}"));
        }
        let answered: std::collections::HashSet<_> =
            approved.iter().map(|(c, _)| c.clone()).collect();
        for contact in tried.lock().await.iter().filter(|c| !answered.contains(*c)) {
            match admin
                .get_contact(GetContactRequest {
                    contact_id: contact.clone(),
                })
                .await
            {
                Err(e) => assert_eq!(e.code(), tonic::Code::NotFound, "{contact}: {e}"),
                Ok(got) => {
                    let got = got.into_inner();
                    assert_eq!(got.owner, "seller", "{contact} half-written");
                    assert_eq!(got.history.len(), 1, "{contact} half-written");
                }
            }
        }
    }
}

/// With `store.retention` of a few seconds, a contact nobody touches is
/// deleted (`GetContact` answers NOT_FOUND), while one whose handoff is
/// acknowledged and reported on meanwhile stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_contact_is_deleted_and_an_active_one_stays() {
    let router = router(&[
        "--set",
        "store.retention=4s",
        "--set",
        "server.purge_every=100ms",
        "--set",
        "policy.circular_window=1s",
        "--set",
        "policy.chain_gap=1s",
        "--set",
        "policy.rate_window_short=1s",
        "--set",
        "policy.rate_window_long=2s",
        "--set",
        "policy.context_ttl=2s",
        "--set",
        "policy.decision_ttl=2s",
        "--set",
        "health.defer_window=2s",
    ])
    .await;
    let mut handoff = router.handoff().await;
    let mut admin = router.admin().await;
    let mut ids = Vec::new();
    for contact in ["idle-1", "active-1"] {
        let reply = handoff
            .request_handoff(handoff_to_seller(contact))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(decision(&reply), Decision::Approved, "{}", reply.reason);
        ids.push(reply.handoff_id);
    }
    let exists = |contact: &'static str| {
        let mut admin = admin.clone();
        async move {
            admin
                .get_contact(GetContactRequest {
                    contact_id: contact.into(),
                })
                .await
                .map(|_| ())
        }
    };
    // Keep the active contact busy, 1.5s and 3s in.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let ack = AcknowledgeHandoffRequest {
        contact_id: "active-1".into(),
        handoff_id: ids[1].clone(),
        bot: "seller".into(),
    };
    handoff.acknowledge_handoff(ack).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let outcome = RecordOutcomeRequest {
        handoff_id: ids[1].clone(),
        outcome: baton_proto::v1::Outcome::Successful as i32,
    };
    handoff.record_outcome(outcome).await.unwrap();

    eventually(
        "the idle contact to be deleted",
        Duration::from_secs(20),
        || {
            let exists = exists("idle-1");
            async move {
                match exists.await {
                    Err(e) if e.code() == tonic::Code::NotFound => Some(()),
                    _ => None,
                }
            }
        },
    )
    .await;
    exists("active-1").await.expect("the active contact stays");
    let got = admin
        .get_contact(GetContactRequest {
            contact_id: "active-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.owner, "seller");
}
