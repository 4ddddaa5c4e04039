//! `baton.v1.AdminService` (operators) and `baton.v1.HealthService` (probes).

use std::sync::Arc;

use baton_policy::{Decision, HealthStatus};
use baton_proto::v1::admin_service_server::AdminService;
use baton_proto::v1::health_service_server::HealthService;
use baton_proto::v1::*;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::engine::{Engine, now_ms};
use crate::stream::forward;
use crate::{auth, convert};

pub struct AdminApi {
    pub engine: Arc<Engine>,
    pub shutdown: watch::Receiver<bool>,
    pub watch_buffer: usize,
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn get_contact(
        &self,
        request: Request<GetContactRequest>,
    ) -> Result<Response<GetContactResponse>, Status> {
        auth::operator(&auth::caller(&request))?;
        let req = request.into_inner();
        convert::get_contact(self.engine.policy(), &req)?;
        let id = req.contact_id;
        let contact = self.engine.contact(&id).await?;
        let now = now_ms();
        let depth = contact.chain_depth(self.engine.policy().config(), now);
        Ok(Response::new(convert::contact_out(
            &id, &contact, depth, now,
        )))
    }

    async fn list_bots(
        &self,
        request: Request<ListBotsRequest>,
    ) -> Result<Response<ListBotsResponse>, Status> {
        auth::operator(&auth::caller(&request))?;
        let bots = self
            .engine
            .bots()
            .into_iter()
            .map(|b| {
                let health = match b.status {
                    HealthStatus::Healthy(_) => BotHealth::Healthy,
                    HealthStatus::Unhealthy(_) => BotHealth::Unhealthy,
                    HealthStatus::Stale(_) => BotHealth::Stale,
                    HealthStatus::Unknown => BotHealth::Unknown,
                };
                Bot {
                    id: b.id,
                    sla_p95_ms: b.sla_p95_ms,
                    health: health as i32,
                    health_detail: b.status.detail().to_owned(),
                    last_report: b.report.as_ref().map(convert::report_out),
                }
            })
            .collect();
        Ok(Response::new(ListBotsResponse { bots }))
    }

    async fn get_stats(
        &self,
        request: Request<GetStatsRequest>,
    ) -> Result<Response<GetStatsResponse>, Status> {
        auth::operator(&auth::caller(&request))?;
        let decisions = self
            .engine
            .counts()
            .into_iter()
            .map(|(d, count)| DecisionCount {
                decision: convert::decision_out(d) as i32,
                count,
            })
            .collect();
        let thresholds = self
            .engine
            .learned_thresholds()
            .into_iter()
            .map(|t| RouteThreshold {
                route: t.key.route(),
                pattern: t.key.pattern,
                base_threshold: t.base,
                adjustment: t.adjustment,
                threshold: t.threshold,
                outcomes: t.outcomes as u32,
                successes: t.successes as u32,
            })
            .collect();
        Ok(Response::new(GetStatsResponse {
            decisions,
            thresholds,
        }))
    }

    async fn release_contact(
        &self,
        request: Request<ReleaseContactRequest>,
    ) -> Result<Response<ReleaseContactResponse>, Status> {
        auth::operator(&auth::caller(&request))?;
        let req = request.into_inner();
        let owner = convert::release_contact(self.engine.policy(), &req)?;
        let previous = self
            .engine
            .release(&req.contact_id, owner, &req.reason)
            .await?;
        Ok(Response::new(ReleaseContactResponse {
            previous_owner: previous,
            owner: req.owner,
        }))
    }

    type WatchDecisionsStream = ReceiverStream<Result<WatchDecisionsResponse, Status>>;

    async fn watch_decisions(
        &self,
        request: Request<WatchDecisionsRequest>,
    ) -> Result<Response<Self::WatchDecisionsStream>, Status> {
        auth::operator(&auth::caller(&request))?;
        let filter = request.into_inner();
        convert::watch_decisions(self.engine.policy(), &filter)?;
        let stream = forward(
            self.engine.subscribe(),
            self.shutdown.clone(),
            self.watch_buffer,
            move |e| {
                let v = &e.verdict;
                let wanted = (filter.contact_id.is_empty() || filter.contact_id == e.contact_id)
                    && (filter.bot.is_empty() || filter.bot == e.source || filter.bot == v.target)
                    && !(filter.skip_stay && v.decision == Decision::Stay);
                wanted.then(|| WatchDecisionsResponse {
                    decision: Some(convert::record_out(
                        &e.contact_id,
                        &e.source,
                        &e.request_id,
                        e.at,
                        v,
                    )),
                })
            },
        );
        Ok(Response::new(stream))
    }
}

pub struct HealthApi {
    pub engine: Arc<Engine>,
}

#[tonic::async_trait]
impl HealthService for HealthApi {
    async fn report_health(
        &self,
        request: Request<Streaming<ReportHealthRequest>>,
    ) -> Result<Response<ReportHealthResponse>, Status> {
        let caller = auth::caller(&request);
        let mut reports = request.into_inner();
        let mut accepted = 0;
        while let Some(message) = reports.next().await {
            let report = message?.report;
            // A probe speaks only for its own bot: refused before anything is applied.
            auth::as_probe(&caller, report.as_ref().map_or("", |r| r.bot.as_str()))?;
            let (bot, report) = convert::report_in(self.engine.policy(), report)?;
            self.engine.report_health(bot, report).await?;
            accepted += 1;
        }
        Ok(Response::new(ReportHealthResponse { accepted }))
    }
}
