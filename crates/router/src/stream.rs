//! Server streams fed by the engine's decision broadcast: they end when the
//! client leaves or the router shuts down, and say so when they fell behind.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::Instrument;

use crate::engine::DecisionEvent;
use crate::error::EngineError;

/// Resolves once the router began shutting down.
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which is a shutdown too.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Forwards the events `select` keeps, as `select` maps them.
pub fn forward<T, F>(
    mut events: broadcast::Receiver<Arc<DecisionEvent>>,
    mut shutdown: watch::Receiver<bool>,
    buffer: usize,
    select: F,
) -> ReceiverStream<Result<T, Status>>
where
    T: Send + 'static,
    F: Fn(&DecisionEvent) -> Option<T> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(buffer);
    let task = async move {
        loop {
            tokio::select! {
                () = stopped(&mut shutdown) => break,
                _ = tx.closed() => break,
                event = events.recv() => match event {
                    Ok(event) => {
                        let Some(item) = select(&event) else { continue };
                        if tx.send(Ok(item)).await.is_err() {
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "watcher fell behind; ending its stream");
                        let status = Status::from(EngineError::DataLoss(format!(
                            "watcher fell behind and missed {missed} decisions; subscribe again"
                        )));
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
    };
    tokio::spawn(task.in_current_span());
    ReceiverStream::new(rx)
}
