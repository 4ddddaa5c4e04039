//! SPEC §1.1: "I want to sell my house and buy a new one" must not bounce
//! the contact between the seller and buyer bots forever.

use std::collections::HashMap;

use baton_proto::v1::{Decision, GetContactRequest};

use crate::{decision, request, router};

/// Bots that obey every decision: whoever owns the contact sends the
/// two-intent message; an approval moves the conversation to the target.
/// Returns the handoffs approved and the final owner.
async fn scripted_bots(extra: &[&str], rounds: usize) -> (usize, String, Vec<(String, String)>) {
    let router = router(extra).await;
    let mut client = router.handoff().await;
    let mut owner = "lead".to_owned();
    let mut approved = 0;
    let mut seen: HashMap<Decision, usize> = HashMap::new();
    for _ in 0..rounds {
        if owner == "human" {
            break;
        }
        let message = "I want to sell my house and buy a new one";
        let reply = client
            .request_handoff(request("loop-1", &owner, message))
            .await
            .unwrap()
            .into_inner();
        *seen.entry(decision(&reply)).or_default() += 1;
        match decision(&reply) {
            Decision::Approved => {
                approved += 1;
                owner = reply.target_bot;
            }
            Decision::EscalatedHuman => owner = "human".into(),
            Decision::Stay | Decision::BlockedCircular => {}
            other => panic!("unexpected {other:?}: {}", reply.reason),
        }
    }
    let contact = router
        .admin()
        .await
        .get_contact(GetContactRequest {
            contact_id: "loop-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(contact.owner, owner);
    let moves = contact
        .history
        .iter()
        .filter(|h| h.kind == "HANDOFF")
        .map(|h| (h.source_bot.clone(), h.target_bot.clone()))
        .collect();
    (approved, owner, moves)
}

#[tokio::test]
async fn two_intents_never_ping_pong_the_contact() {
    let (approved, owner, moves) = scripted_bots(&[], 12).await;
    // lead → seller (sell first), seller → buyer (the pending intent); the
    // buyer bot seeing "sell" again would bounce back: blocked as circular.
    assert_eq!(
        moves,
        vec![
            ("lead".into(), "seller".into()),
            ("seller".into(), "buyer".into())
        ]
    );
    assert_eq!((approved, owner.as_str()), (2, "buyer"));
}

#[tokio::test]
async fn without_the_loop_gate_the_depth_gate_hands_the_contact_to_a_human() {
    // A 1 ms circular window lets the bounce through: the chain grows until
    // the fourth handoff, which goes to a human instead.
    let (approved, owner, moves) =
        scripted_bots(&["--set", "policy.circular_window=1ms"], 12).await;
    assert_eq!(approved, 3);
    assert_eq!(owner, "human");
    assert_eq!(moves.len(), 3);
}
