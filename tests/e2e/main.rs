//! End-to-end tests: the built `baton-router` binary, started as a real
//! process on a loopback port, driven over real gRPC.

mod auth;
mod bad_input;
mod context;
mod corrupt_store;
mod etcd;
mod grpcurl;
mod health_gate;
mod intents;
mod limits;
mod loops;
mod operators;
mod probe;
mod race;
mod store;
mod telemetry;

use std::path::Path;

use baton_proto::v1::{Decision, RequestHandoffRequest, RequestHandoffResponse};
use baton_test_support::Router;

pub fn router_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_baton-router"))
}

pub async fn router(extra: &[&str]) -> Router {
    Router::start(router_bin(), extra)
        .await
        .expect("start baton-router")
}

pub fn request(contact: &str, source: &str, message: &str) -> RequestHandoffRequest {
    RequestHandoffRequest {
        contact_id: contact.into(),
        source_bot: source.into(),
        message: message.into(),
        ..Default::default()
    }
}

/// Every configured bot and its health, as an operator sees them.
pub async fn bots(router: &Router) -> Vec<baton_proto::v1::Bot> {
    let request = baton_proto::v1::ListBotsRequest {};
    router
        .admin()
        .await
        .list_bots(request)
        .await
        .expect("ListBots")
        .into_inner()
        .bots
}

pub fn decision(r: &RequestHandoffResponse) -> Decision {
    Decision::try_from(r.decision).expect("known decision")
}
