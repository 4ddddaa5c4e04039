//! SPEC §2.1: bad input is refused with the field named, and nothing changes.

use baton_proto::v1::{Decision, GetContactRequest, Signal};
use tonic::Code;

use crate::{decision, request, router};

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
