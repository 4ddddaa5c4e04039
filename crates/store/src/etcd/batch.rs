//! Group commit on etcd (SPEC §3: concurrent commits of different contacts
//! share one write). The lock acquires and fenced commits of different
//! contacts that wait at the same time go to etcd as one transaction, each
//! as a nested transaction with its own compares: one contact's refused
//! compare refuses its own part and nobody else's. Every write of a batch
//! carries the batch's revision, which is therefore the fencing token of
//! every lock it takes.
//!
//! Batches form on their own, with no wait: while fewer than `inflight`
//! batches are on their way, the first waiting transaction goes out at
//! once with whatever else is waiting; the ones that arrive meanwhile go
//! out together next. A batch holds at most one transaction per contact
//! (etcd refuses a transaction that writes one key twice), at most `max`
//! of them and about `bytes` of keys and values.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{KvClient, Txn, TxnOp, TxnOpResponse};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tracing::Instrument;

use super::{retrying, unavailable};
use crate::StoreError;

/// How transactions are grouped (`etcd.batch_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EtcdBatching {
    /// Transactions in one batch, at most. Each part's own operations must
    /// stay under etcd's `--max-txn-ops` (128) minus this.
    pub max: usize,
    /// Keys and values in one batch, about, at most; a transaction larger
    /// than this goes alone. Below etcd's `--max-request-bytes` (1.5 MiB).
    pub bytes: usize,
    /// Batches on their way to etcd at once.
    pub inflight: usize,
}

impl Default for EtcdBatching {
    fn default() -> Self {
        Self {
            max: 64,
            bytes: 512 * 1024,
            inflight: 2,
        }
    }
}

/// What etcd answered one transaction of a batch.
pub(super) struct Answer {
    /// The batch's revision: that of every write in it.
    pub revision: i64,
    pub succeeded: bool,
    pub responses: Vec<TxnOpResponse>,
}

struct Job {
    what: &'static str,
    contact: String,
    txn: Txn,
    bytes: usize,
    reply: oneshot::Sender<Result<Answer, StoreError>>,
}

/// The queue of transactions waiting for a batch.
pub(super) struct Batcher {
    queue: mpsc::UnboundedSender<Job>,
}

impl Batcher {
    /// The batcher, and the task that sends its batches (run it until the
    /// store goes).
    pub(super) fn start(
        kv: KvClient,
        options: EtcdBatching,
        op_timeout: Duration,
    ) -> (Self, impl std::future::Future<Output = ()> + Send + 'static) {
        let (queue, waiting) = mpsc::unbounded_channel();
        (Self { queue }, dispatch(waiting, kv, options, op_timeout))
    }

    /// Sends `txn`, which touches `contact`'s keys only (`bytes` of keys
    /// and values, about), in the next batch; `what` names it in errors.
    /// A caller gone before its batch leaves is not sent.
    pub(super) async fn send(
        &self,
        what: &'static str,
        contact: &str,
        txn: Txn,
        bytes: usize,
    ) -> Result<Answer, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            what,
            contact: contact.to_owned(),
            txn,
            bytes,
            reply,
        };
        self.queue
            .send(job)
            .map_err(|_| unavailable(what, "the store is closed"))?;
        answer
            .await
            .map_err(|_| unavailable(what, "the store closed before etcd answered"))?
    }
}

async fn dispatch(
    mut queue: mpsc::UnboundedReceiver<Job>,
    kv: KvClient,
    options: EtcdBatching,
    op_timeout: Duration,
) {
    let slots = Arc::new(Semaphore::new(options.inflight.max(1)));
    let mut carried = VecDeque::new();
    loop {
        let first = match carried.pop_front() {
            Some(job) => job,
            None => match queue.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let batch = fill(first, &mut carried, &mut queue, &options);
        if !batch.is_empty() {
            tokio::spawn(send_batch(batch, kv.clone(), op_timeout, slot).in_current_span());
        }
    }
}

/// A batch: `first`, then what was carried over from the last batch, then
/// what waits in the queue. A transaction that does not fit (its contact is
/// already in, or the bytes are spent) is carried to the next, in order.
fn fill(
    first: Job,
    carried: &mut VecDeque<Job>,
    queue: &mut mpsc::UnboundedReceiver<Job>,
    options: &EtcdBatching,
) -> Vec<Job> {
    let mut batch = Vec::new();
    let mut contacts = HashSet::new();
    let mut bytes = 0;
    let mut later = VecDeque::new();
    let mut next = Some(first);
    while batch.len() < options.max.max(1) && later.len() < options.max.max(1) {
        let Some(job) = next
            .take()
            .or_else(|| carried.pop_front())
            .or_else(|| queue.try_recv().ok())
        else {
            break;
        };
        if job.reply.is_closed() {
            continue;
        }
        let fits = batch.is_empty() || bytes + job.bytes <= options.bytes;
        if !fits || contacts.contains(&job.contact) {
            later.push_back(job);
            continue;
        }
        bytes += job.bytes;
        contacts.insert(job.contact.clone());
        batch.push(job);
    }
    later.append(carried);
    *carried = later;
    batch
}

/// One etcd transaction for the whole batch; each caller gets its part of
/// the answer, or the batch's error.
async fn send_batch(
    batch: Vec<Job>,
    kv: KvClient,
    op_timeout: Duration,
    slot: OwnedSemaphorePermit,
) {
    let mut parts = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for job in batch {
        parts.push(TxnOp::txn(job.txn));
        replies.push((job.what, job.reply));
    }
    let sent = tokio::time::timeout(op_timeout, retrying(&kv, Txn::new().and_then(parts))).await;
    drop(slot);
    let resp = match sent {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => return fail(replies, &e),
        Err(_) => return fail(replies, &format!("no answer within {op_timeout:?}")),
    };
    let revision = resp.header().map_or(0, |h| h.revision());
    let mut answers = resp.op_responses().into_iter();
    for (what, reply) in replies {
        let answer = match answers.next() {
            Some(TxnOpResponse::Txn(part)) => Ok(Answer {
                revision,
                succeeded: part.succeeded(),
                responses: part.op_responses(),
            }),
            _ => Err(unavailable(
                what,
                "etcd's answer lacks this transaction's part",
            )),
        };
        // A caller gone meanwhile cleans up after itself (see `lock`).
        let _ = reply.send(answer);
    }
}

fn fail(
    replies: Vec<(&'static str, oneshot::Sender<Result<Answer, StoreError>>)>,
    error: &dyn std::fmt::Display,
) {
    for (what, reply) in replies {
        let _ = reply.send(Err(unavailable(what, error)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Reply = oneshot::Receiver<Result<Answer, StoreError>>;

    fn job(contact: &str, bytes: usize) -> (Job, Reply) {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            what: "commit",
            contact: contact.into(),
            txn: Txn::new(),
            bytes,
            reply,
        };
        (job, answer)
    }

    fn contacts(batch: &[Job]) -> Vec<&str> {
        batch.iter().map(|j| j.contact.as_str()).collect()
    }

    /// Queues `jobs` and returns the batches `fill` makes of them, keeping
    /// the callers' ends open.
    fn batches(jobs: &[(&str, usize)], options: &EtcdBatching) -> Vec<Vec<String>> {
        let (queue, mut waiting) = mpsc::unbounded_channel();
        let mut answers = Vec::new();
        for (contact, bytes) in jobs {
            let (job, answer) = job(contact, *bytes);
            queue.send(job).unwrap();
            answers.push(answer);
        }
        let mut carried = VecDeque::new();
        let mut out = Vec::new();
        while let Some(first) = carried.pop_front().or_else(|| waiting.try_recv().ok()) {
            let batch = fill(first, &mut carried, &mut waiting, options);
            out.push(contacts(&batch).iter().map(|c| c.to_string()).collect());
        }
        out
    }

    #[test]
    fn a_batch_holds_one_transaction_per_contact_and_the_next_keeps_the_order() {
        let options = EtcdBatching::default();
        let got = batches(
            &[("a", 10), ("b", 10), ("a", 10), ("c", 10), ("a", 10)],
            &options,
        );
        assert_eq!(got, [vec!["a", "b", "c"], vec!["a"], vec!["a"]]);
    }

    #[test]
    fn a_batch_is_bounded_by_count_and_bytes_and_a_large_one_goes_alone() {
        let options = EtcdBatching {
            max: 2,
            bytes: 100,
            inflight: 1,
        };
        let got = batches(&[("a", 1), ("b", 1), ("c", 1)], &options);
        assert_eq!(got, [vec!["a", "b"], vec!["c"]]);
        let got = batches(&[("a", 60), ("b", 60), ("c", 500), ("d", 30)], &options);
        assert_eq!(got, [vec!["a"], vec!["b", "d"], vec!["c"]]);
    }

    #[test]
    fn a_caller_gone_before_its_batch_leaves_is_not_sent() {
        let (queue, mut waiting) = mpsc::unbounded_channel();
        let (first, _kept) = job("a", 1);
        let (gone, answer) = job("b", 1);
        drop(answer);
        let (last, _kept_too) = job("c", 1);
        queue.send(gone).unwrap();
        queue.send(last).unwrap();
        let mut carried = VecDeque::new();
        let batch = fill(first, &mut carried, &mut waiting, &EtcdBatching::default());
        assert_eq!(contacts(&batch), ["a", "c"]);
        assert!(carried.is_empty());
    }
}
