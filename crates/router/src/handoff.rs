//! `baton.v1.HandoffService`: what bots call.

use std::sync::Arc;

use baton_policy::Decision;
use baton_proto::v1::handoff_service_server::HandoffService;
use baton_proto::v1::*;
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::engine::Engine;
use crate::error::EngineError;
use crate::stream::forward;
use crate::{auth, convert};

pub struct HandoffApi {
    pub engine: Arc<Engine>,
    pub shutdown: watch::Receiver<bool>,
    pub watch_buffer: usize,
}

fn required(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(EngineError::Invalid(format!("field '{field}' is required")).into());
    }
    Ok(())
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
        auth::as_bot(&auth::caller(&request), &request.get_ref().bot)?;
        let req = request.into_inner();
        convert::contact_id(self.engine.policy(), &req.contact_id)?;
        let contact = self.engine.context(&req.contact_id, &req.bot).await?;
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
        required("handoff_id", &req.handoff_id)?;
        required("bot", &req.bot)?;
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
        auth::any_bot(&auth::caller(&request))?;
        let req = request.into_inner();
        required("handoff_id", &req.handoff_id)?;
        let outcome = convert::outcome_in(req.outcome)?;
        let (key, threshold, recorded) =
            self.engine.record_outcome(&req.handoff_id, outcome).await?;
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
        let bot = request.into_inner().bot;
        if self.engine.policy().bot_ix(&bot).is_none() {
            return Err(EngineError::Invalid(format!(
                "field 'bot': '{bot}' is not a configured bot"
            ))
            .into());
        }
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
