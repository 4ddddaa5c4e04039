//! SPEC §1.2: what the lead bot learned reaches the seller bot, also after
//! the router is killed and restarted on the same data directory.

use baton_proto::v1::{Budget, ContextPacket, Decision, GetContextRequest};

use crate::{decision, request, router};

#[tokio::test]
async fn the_seller_reads_what_the_lead_extracted_even_after_kill_9() {
    let mut router = router(&[]).await;
    let mut req = request(
        "ctx-1",
        "lead",
        "I need to sell my house, what's my home worth?",
    );
    req.context = Some(ContextPacket {
        timeline: Some("3 months".into()),
        budget: Some(Budget {
            min: 300_000.0,
            max: 450_000.0,
            currency: "USD".into(),
        }),
        temperature: Some("hot".into()),
        ..Default::default()
    });
    req.request_id = "lead-msg-7".into();
    let reply = router
        .handoff()
        .await
        .request_handoff(req)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decision(&reply), Decision::Approved, "{}", reply.reason);
    assert_eq!(reply.target_bot, "seller");

    let read = || GetContextRequest {
        contact_id: "ctx-1".into(),
        bot: "seller".into(),
    };
    let check = |packet: ContextPacket| {
        assert_eq!(packet.timeline.as_deref(), Some("3 months"));
        let budget = packet.budget.expect("budget");
        assert_eq!(
            (budget.min, budget.max, budget.currency.as_str()),
            (300_000.0, 450_000.0, "USD")
        );
        assert!(packet.answered_questions.contains(&"timeline".to_owned()));
        assert!(packet.answered_questions.contains(&"budget".to_owned()));
    };
    let before = router
        .handoff()
        .await
        .get_context(read())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before.owner, "seller");
    assert_eq!(before.last_handoff_id, reply.handoff_id);
    check(before.context.clone().unwrap());

    router.restart().await.unwrap(); // kill -9, then start on the same data dir
    let after = router
        .handoff()
        .await
        .get_context(read())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after, before);
    check(after.context.unwrap());

    // The lead bot no longer owns the contact and cannot read it as owner.
    let status = router
        .handoff()
        .await
        .get_context(GetContextRequest {
            contact_id: "ctx-1".into(),
            bot: "lead".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
}
