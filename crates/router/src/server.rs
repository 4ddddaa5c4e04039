//! Puts the router together: store, engine, the three Baton services,
//! reflection (v1 and v1alpha), `grpc.health.v1`, and a graceful drain.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use baton_policy::Policy;
use baton_proto::v1::admin_service_server::AdminServiceServer;
use baton_proto::v1::handoff_service_server::HandoffServiceServer;
use baton_proto::v1::health_service_server::HealthServiceServer;
use baton_store::{EmbeddedStore, EtcdOptions, EtcdStore, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tracing::{info, warn};

use crate::admin::{AdminApi, HealthApi};
use crate::auth::{Auth, Interceptor, RateLimit};
use crate::config::RouterConfig;
use crate::engine::Engine;
use crate::handoff::HandoffApi;

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
        };
        let store = EtcdStore::connect(options)
            .await
            .with_context(|| format!("cannot use etcd at {}", e.endpoints.join(",")))?;
        return Ok(Arc::new(store));
    }
    let store = if config.server.memory {
        info!("state kept in memory only: nothing survives a restart");
        EmbeddedStore::in_memory()
    } else {
        let dir = &config.server.data_dir;
        info!(data_dir = %dir.display(), "embedded store");
        EmbeddedStore::open(dir)?
    };
    Ok(Arc::new(store))
}

/// Builds the engine over `store` with the configured policy.
pub async fn engine(config: &RouterConfig, store: Arc<dyn Store>) -> anyhow::Result<Arc<Engine>> {
    let policy = Policy::new(config.policy.clone())?;
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
    let auth = Arc::new(Auth::from_config(&config.auth, rate)?);
    if auth.enabled() {
        info!(
            principals = config.auth.principals.len(),
            "bearer tokens required"
        );
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
    let mut builder =
        Server::builder().concurrency_limit_per_connection(s.max_concurrent_per_connection);
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
    let intercept = Interceptor(Arc::clone(&auth));
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
    // Small unary calls: Nagle's algorithm would only add latency.
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|stream| {
            let _ = stream.set_nodelay(true);
        })
    });
    let mut drained = stop_rx.clone();
    let server = builder
        .add_service(InterceptedService::new(
            HandoffServiceServer::new(handoff).max_decoding_message_size(max),
            intercept.clone(),
        ))
        .add_service(InterceptedService::new(
            AdminServiceServer::new(admin).max_decoding_message_size(max),
            intercept.clone(),
        ))
        .add_service(InterceptedService::new(
            HealthServiceServer::new(probes).max_decoding_message_size(max),
            intercept,
        ))
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
            warn!(grace = ?grace, "grace period over with calls in flight");
            Ok(())
        }
    };
    purge.abort();
    info!("stopped");
    result
}

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
