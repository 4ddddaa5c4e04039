//! Puts the router together: store, engine, the three Baton services,
//! reflection (v1 and v1alpha), `grpc.health.v1`, and a graceful drain.
//!
//! Connections are accepted and bounded by [`conn`]; the middleware
//! (call counting, spans, tokens and limits) is one tower layer in [`layers`].

mod conn;
mod layers;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use baton_proto::v1::admin_service_server::AdminServiceServer;
use baton_proto::v1::handoff_service_server::HandoffServiceServer;
use baton_proto::v1::health_service_server::HealthServiceServer;
use baton_store::{EmbeddedStore, EtcdOptions, EtcdStore, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tracing::{info, warn};

use crate::admin::{AdminApi, HealthApi};
use crate::auth::{Auth, FailureLimit, RateLimit};
use crate::config::RouterConfig;
use crate::engine::Engine;
use crate::handoff::HandoffApi;
use crate::telemetry::Spans;

/// Opens the configured store: etcd, the embedded file, or memory only.
pub async fn open_store(config: &RouterConfig) -> anyhow::Result<Arc<dyn Store>> {
    if !config.etcd.endpoints.is_empty() {
        let e = &config.etcd;
        let p = &config.policy;
        let options = EtcdOptions {
            endpoints: e.endpoints.clone(),
            prefix: e.prefix.clone(),
            session_ttl: e.session_ttl,
            op_timeout: e.op_timeout,
            connect_timeout: e.connect_timeout,
            context_ttl: p.policy.context_ttl,
            decision_ttl: p.policy.decision_ttl,
            health_ttl: p.health.stale_after,
            defer_ttl: p.health.defer_window,
            retention: config.store.retention,
            batch: e.batching(),
            ..EtcdOptions::default()
        };
        let store = EtcdStore::connect(options)
            .await
            .with_context(|| format!("cannot use etcd at {}", e.endpoints.join(",")))?;
        return Ok(Arc::new(store));
    }
    let store = if config.server.memory {
        info!("state kept in memory only: nothing survives a restart");
        EmbeddedStore::in_memory_with(config.store.embedded())
    } else {
        let dir = &config.server.data_dir;
        info!(data_dir = %dir.display(), "embedded store");
        EmbeddedStore::open_with(dir, config.store.embedded())?
    };
    Ok(Arc::new(store))
}

/// Builds the engine over `store` with the configured policy.
pub async fn engine(config: &RouterConfig, store: Arc<dyn Store>) -> anyhow::Result<Arc<Engine>> {
    let policy = crate::model::policy(&config.policy)?;
    let engine = Engine::new(policy, store, config.server.watch_buffer)
        .await
        .context("cannot load state from the store")?
        .with_stay_span_every(config.server.stay_span_every);
    let engine = Arc::new(engine);
    engine.follow_store();
    crate::telemetry::register_gauges(Arc::downgrade(&engine));
    Ok(engine)
}

/// Serves on `listener` until `shutdown` resolves, then stops accepting,
/// ends the watch streams and lets in-flight decisions finish within
/// `server.shutdown_grace`.
pub async fn serve(
    config: RouterConfig,
    engine: Arc<Engine>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let s = &config.server;
    let rate = (s.rate_per_principal > 0.0).then_some(RateLimit {
        per_second: s.rate_per_principal,
        burst: s.rate_burst,
    });
    let failures = Some(FailureLimit {
        per_minute: s.auth_failures_per_minute,
    });
    let auth = Arc::new(Auth::from_config(&config.auth, rate)?.with_failure_limit(failures));
    let tls = s.tls_cert.is_some();
    if auth.enabled() {
        info!(
            principals = config.auth.principals.len(),
            "bearer tokens required"
        );
        if !tls && !addr.ip().is_loopback() {
            warn!(%addr, "bearer tokens travel in clear text beyond loopback: serve TLS (--tls-cert, --tls-key)");
        }
    } else if addr.ip().is_loopback() {
        warn!(%addr, "no tokens configured: listening on loopback only");
    } else if config.auth.insecure_allow_remote {
        warn!(%addr, "no tokens configured and listening beyond loopback: anyone who reaches it can act as any bot");
    } else {
        anyhow::bail!(
            "refusing to listen on {addr} without authentication: configure [auth] principals, \
             listen on loopback, or pass --insecure-allow-remote"
        );
    }
    let mut builder = Server::builder()
        .max_concurrent_streams(s.max_concurrent_streams)
        .http2_keepalive_interval(Some(s.keepalive_interval))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT));
    if let Some(limit) = per_connection_limit(s) {
        builder = builder.concurrency_limit_per_connection(limit);
    }
    if let (Some(cert), Some(key)) = (&s.tls_cert, &s.tls_key) {
        let read = |p: &std::path::PathBuf| {
            std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
        };
        let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
        if let Some(ca) = &s.tls_client_ca {
            tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
        }
        builder = builder.tls_config(tls).context("TLS configuration")?;
        info!(
            client_certificates = s.tls_client_ca.is_some(),
            "serving TLS"
        );
    }
    let max = s.max_request_bytes;
    let (stop_tx, stop_rx) = watch::channel(false);
    let buffer = config.server.watch_buffer;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<HandoffServiceServer<HandoffApi>>()
        .await;
    health.set_serving::<AdminServiceServer<AdminApi>>().await;
    health.set_serving::<HealthServiceServer<HealthApi>>().await;
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;

    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(baton_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let purge = spawn_purge(
        Arc::clone(&engine),
        config.server.purge_every,
        stop_rx.clone(),
    );

    let handoff = HandoffApi {
        engine: Arc::clone(&engine),
        shutdown: stop_rx.clone(),
        watch_buffer: buffer,
    };
    let admin = AdminApi {
        engine: Arc::clone(&engine),
        shutdown: stop_rx.clone(),
        watch_buffer: buffer,
    };
    let probes = HealthApi {
        engine: Arc::clone(&engine),
    };
    let connections = Arc::new(conn::Connections::default());
    let timeouts = conn::Timeouts {
        handshake: s.handshake_timeout,
        idle: s.idle_timeout,
    };
    let incoming = conn::accept(
        listener,
        Arc::clone(&connections),
        timeouts,
        stop_rx.clone(),
    );
    let mut drained = stop_rx.clone();
    // A SERVER span per call, parent of the decision span, when spans are exported.
    let spans = Spans::new(config.server.otlp_endpoint.is_some());
    let server = builder
        .layer(layers::FrontLayer::new(
            Arc::clone(&auth),
            spans,
            s.max_calls_in_flight,
            s.call_timeout,
        ))
        .add_service(HandoffServiceServer::new(handoff).max_decoding_message_size(max))
        .add_service(AdminServiceServer::new(admin).max_decoding_message_size(max))
        .add_service(HealthServiceServer::new(probes).max_decoding_message_size(max))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, async move {
            crate::stream::stopped(&mut drained).await;
        });
    info!(%addr, "baton-router serving");
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result.context("server failed"),
        () = shutdown => {}
    }
    info!("shutting down: no new calls, draining in-flight decisions");
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let _ = stop_tx.send(true);
    let grace = config.server.shutdown_grace;
    let result = match tokio::time::timeout(grace, &mut server).await {
        Ok(result) => result.context("server failed while draining"),
        Err(_) => {
            warn!(grace = ?grace, connections = connections.len(), "grace period over with calls in flight");
            Ok(())
        }
    };
    purge.abort();
    info!("stopped");
    result
}

/// After the drain: releases what this process still holds in the store
/// (with etcd, revokes the session lease), so another replica can take
/// this one's contacts at once rather than after `session_ttl` (SPEC §3).
pub async fn close_store(store: &dyn Store) {
    match store.close().await {
        Ok(()) => info!("store closed"),
        Err(e) => warn!(error = %e, "cannot close the store; its locks go with the session lease"),
    }
}

/// The limit on calls in flight per connection that needs a layer of its
/// own: HTTP/2 already holds a connection to `max_concurrent_streams` open
/// calls, and a call in flight is an open stream, so a looser limit could
/// never bind and would only cost a semaphore per call.
fn per_connection_limit(s: &crate::config::ServerConfig) -> Option<usize> {
    (s.max_concurrent_per_connection < s.max_concurrent_streams as usize)
        .then_some(s.max_concurrent_per_connection)
}

/// How long a keepalive ping may go unanswered before the peer counts as gone.
const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

fn spawn_purge(
    engine: Arc<Engine>,
    every: std::time::Duration,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => match engine.purge().await {
                    Ok(n) if n > 0 => info!(removed = n, "purged expired decisions"),
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "purge failed"),
                },
                () = crate::stream::stopped(&mut stop) => break,
            }
        }
    })
}

/// Resolves on SIGTERM or SIGINT.
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => info!("SIGINT received"),
        () = term => info!("SIGTERM received"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_limit_gets_a_layer_only_when_tighter_than_http2_streams() {
        let mut s = crate::config::ServerConfig::default();
        assert!(s.max_concurrent_per_connection >= s.max_concurrent_streams as usize);
        assert_eq!(per_connection_limit(&s), None);
        s.max_concurrent_per_connection = 8;
        assert_eq!(per_connection_limit(&s), Some(8));
        s.max_concurrent_streams = 8;
        assert_eq!(per_connection_limit(&s), None);
    }
}
