//! SPEC §1.3: many messages at once for one contact; exactly one handoff wins.

use baton_proto::v1::{Decision, GetContactRequest, Signal};

use crate::{decision, request, router};

#[tokio::test]
async fn fifty_concurrent_requests_give_exactly_one_approval() {
    let router = router(&[]).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(router.handoff().await);
    }
    let mut calls = Vec::new();
    for i in 0..50 {
        let mut client = clients[i % clients.len()].clone();
        let target = if i % 2 == 0 { "seller" } else { "buyer" };
        let mut req = request("race-1", "lead", "quick question");
        req.signals = vec![Signal {
            target_bot: target.into(),
            confidence: 0.95,
            pattern: "race".into(),
        }];
        calls.push(tokio::spawn(async move {
            client.request_handoff(req).await.map(|r| r.into_inner())
        }));
    }
    let mut approved = Vec::new();
    for call in calls {
        let reply = call.await.unwrap().unwrap();
        match decision(&reply) {
            Decision::Approved => approved.push(reply.target_bot),
            Decision::NotOwner | Decision::ContactBusy => {}
            other => panic!("unexpected {other:?}: {}", reply.reason),
        }
    }
    assert_eq!(approved.len(), 1, "{approved:?}");
    let contact = router
        .admin()
        .await
        .get_contact(GetContactRequest {
            contact_id: "race-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(contact.owner, approved[0]);
    assert_eq!(contact.history.len(), 1);
}
