//! `baton.v1.HandoffService`: what bots call.

use std::sync::Arc;

use baton_policy::Decision;
use baton_proto::v1::handoff_service_server::HandoffService;
use baton_proto::v1::*;
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::{Caller, Role};
use crate::engine::{Engine, Viewer};
use crate::stream::forward;
use crate::{auth, convert};

pub struct HandoffApi {
    pub engine: Arc<Engine>,
    pub shutdown: watch::Receiver<bool>,
    pub watch_buffer: usize,
}

/// Who reads a contact through `GetContext`. The `bot` field, when set,
/// names the reading bot and the token must be that bot's; left empty, only
/// an operator (or any caller of a router without tokens) may read, and
/// sees every contact.
fn context_reader<'a>(caller: &Caller, bot: &'a str) -> Result<Viewer<'a>, Status> {
    match caller {
        Caller::Open | Caller::As(Role::Operator) if bot.is_empty() => Ok(Viewer::Operator),
        _ => {
            auth::as_bot(caller, bot)?;
            Ok(Viewer::Bot(bot))
        }
    }
}

/// Who records an outcome. `RecordOutcomeRequest` names no bot, so a bot
/// is known only by its token; without tokens every caller is trusted as
/// an operator is (the router then listens on loopback only, SPEC §6, and a
/// bot named in the request would be a claim anyone could make).
fn outcome_recorder(caller: &Caller) -> Result<Viewer<'_>, Status> {
    auth::any_bot(caller)?;
    Ok(match caller {
        Caller::As(Role::Bot(bot)) => Viewer::Bot(bot),
        _ => Viewer::Operator,
    })
}

#[tonic::async_trait]
impl HandoffService for HandoffApi {
    async fn request_handoff(
        &self,
        request: Request<RequestHandoffRequest>,
    ) -> Result<Response<RequestHandoffResponse>, Status> {
        auth::as_bot(&auth::caller(&request), &request.get_ref().source_bot)?;
        let req = convert::handoff_request(self.engine.policy(), request.into_inner())?;
        let decided = self.engine.decide(req).await?;
        Ok(Response::new(convert::verdict_out(
            decided.verdict,
            decided.replayed,
        )))
    }

    async fn get_context(
        &self,
        request: Request<GetContextRequest>,
    ) -> Result<Response<GetContextResponse>, Status> {
        let caller = auth::caller(&request);
        let req = request.into_inner();
        let reader = context_reader(&caller, &req.bot)?;
        convert::get_context(self.engine.policy(), &req)?;
        let contact = self.engine.context(&req.contact_id, reader).await?;
        let now = crate::engine::now_ms();
        let live = contact.live_context(now);
        Ok(Response::new(GetContextResponse {
            contact_id: req.contact_id,
            owner: contact.owner.clone(),
            context: Some(live.map(convert::context_out).unwrap_or_default()),
            last_handoff_id: contact.last_handoff_id.clone(),
            expires_at_unix_ms: if live.is_some() {
                contact.context_expires_at
            } else {
                0
            },
        }))
    }

    async fn acknowledge_handoff(
        &self,
        request: Request<AcknowledgeHandoffRequest>,
    ) -> Result<Response<AcknowledgeHandoffResponse>, Status> {
        auth::as_bot(&auth::caller(&request), &request.get_ref().bot)?;
        let req = request.into_inner();
        convert::acknowledge(self.engine.policy(), &req)?;
        let ack = self.engine.acknowledge(&req.handoff_id, &req.bot).await?;
        Ok(Response::new(AcknowledgeHandoffResponse {
            acknowledged_at_unix_ms: ack.at,
            first_acknowledgement: ack.first,
        }))
    }

    async fn record_outcome(
        &self,
        request: Request<RecordOutcomeRequest>,
    ) -> Result<Response<RecordOutcomeResponse>, Status> {
        let caller = auth::caller(&request);
        let recorder = outcome_recorder(&caller)?;
        let req = request.into_inner();
        let outcome = convert::record_outcome(self.engine.policy(), &req)?;
        let (key, threshold, recorded) = self
            .engine
            .record_outcome(&req.handoff_id, outcome, recorder)
            .await?;
        Ok(Response::new(RecordOutcomeResponse {
            route: key.route(),
            pattern: key.pattern,
            threshold,
            recorded,
        }))
    }

    type WatchHandoffsStream = ReceiverStream<Result<WatchHandoffsResponse, Status>>;

    async fn watch_handoffs(
        &self,
        request: Request<WatchHandoffsRequest>,
    ) -> Result<Response<Self::WatchHandoffsStream>, Status> {
        auth::as_bot(&auth::caller(&request), &request.get_ref().bot)?;
        let req = request.into_inner();
        convert::watch_handoffs(self.engine.policy(), &req)?;
        let bot = req.bot;
        let stream = forward(
            self.engine.subscribe(),
            self.shutdown.clone(),
            self.watch_buffer,
            move |event| {
                let v = &event.verdict;
                (v.decision == Decision::Approved && v.target == bot).then(|| {
                    WatchHandoffsResponse {
                        handoff: Some(Handoff {
                            handoff_id: v.handoff_id.clone(),
                            contact_id: event.contact_id.clone(),
                            source_bot: event.source.clone(),
                            target_bot: v.target.clone(),
                            pattern: v.pattern.clone(),
                            confidence: v.confidence,
                            approved_at_unix_ms: event.at,
                            acknowledged_at_unix_ms: 0,
                            outcome: Outcome::Unspecified as i32,
                            kind: "HANDOFF".into(),
                            reason: v.reason.clone(),
                        }),
                        context: v.context.as_ref().map(convert::context_out),
                    }
                })
            },
        );
        Ok(Response::new(stream))
    }
}
