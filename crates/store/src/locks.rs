//! Per-contact locks for a router that runs alone: one async mutex per
//! contact that someone is deciding on, dropped when nobody holds or waits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::StoreError;
use crate::etcd::EtcdHeld;

/// A held contact lock; dropping it releases the lock. Only a store makes
/// one, and a store accepts only its own kind back.
pub struct ContactLock {
    pub contact_id: String,
    /// Fencing token: the lock key's create revision on etcd, 0 in-process.
    pub fence: i64,
    held: Held,
}

/// What a backend keeps for a held lock.
pub(crate) enum Held {
    /// An in-process mutex guard, released when dropped.
    Local(#[allow(dead_code)] LocalHeld),
    /// An etcd lock key on the session lease.
    Etcd(Box<EtcdHeld>),
}

impl ContactLock {
    pub(crate) fn new(contact_id: String, fence: i64, held: Held) -> Self {
        Self {
            contact_id,
            fence,
            held,
        }
    }

    /// The etcd lock key behind this lock, if it is one.
    pub(crate) fn etcd(&self) -> Option<&EtcdHeld> {
        match &self.held {
            Held::Etcd(held) => Some(held),
            Held::Local(_) => None,
        }
    }

    pub(crate) fn etcd_mut(&mut self) -> Option<&mut EtcdHeld> {
        match &mut self.held {
            Held::Etcd(held) => Some(held),
            Held::Local(_) => None,
        }
    }

    /// Whether an in-process lock table gave this lock.
    pub(crate) fn is_local(&self) -> bool {
        matches!(self.held, Held::Local(_))
    }
}

impl std::fmt::Debug for ContactLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContactLock")
            .field("contact_id", &self.contact_id)
            .field("fence", &self.fence)
            .finish()
    }
}

type Table = Arc<Mutex<HashMap<String, Arc<AsyncMutex<()>>>>>;

/// In-process contact locks with a bounded wait.
#[derive(Default, Clone)]
pub struct LocalLocks {
    table: Table,
}

pub(crate) struct LocalHeld {
    table: Table,
    contact_id: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for LocalHeld {
    fn drop(&mut self) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        let mutex = Arc::clone(OwnedMutexGuard::mutex(&guard));
        drop(guard);
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        // The table and this clone are the only references: nobody waits.
        if Arc::strong_count(&mutex) == 2 {
            table.remove(&self.contact_id);
        }
    }
}

impl LocalLocks {
    pub async fn lock(&self, contact_id: &str, wait: Duration) -> Result<ContactLock, StoreError> {
        let mutex = {
            let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(table.entry(contact_id.to_owned()).or_default())
        };
        let Ok(guard) = tokio::time::timeout(wait, Arc::clone(&mutex).lock_owned()).await else {
            // The holder may have left while we timed out: do not leak its entry.
            let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
            if Arc::strong_count(&mutex) == 2 && mutex.try_lock().is_ok() {
                table.remove(contact_id);
            }
            return Err(StoreError::Busy(contact_id.to_owned()));
        };
        let held = LocalHeld {
            table: Arc::clone(&self.table),
            contact_id: contact_id.to_owned(),
            guard: Some(guard),
        };
        Ok(ContactLock::new(
            contact_id.to_owned(),
            0,
            Held::Local(held),
        ))
    }

    /// Contacts with a lock held or awaited.
    pub fn active(&self) -> usize {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_locker_waits_at_most_lock_wait_then_gets_busy() {
        let locks = LocalLocks::default();
        let held = locks.lock("c1", Duration::from_millis(50)).await.unwrap();
        let err = locks
            .lock("c1", Duration::from_millis(30))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Busy(ref c) if c == "c1"));
        // Another contact is independent.
        let other = locks.lock("c2", Duration::from_millis(30)).await.unwrap();
        drop(held);
        let again = locks.lock("c1", Duration::from_millis(30)).await.unwrap();
        drop((other, again));
        assert_eq!(locks.active(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiter_gets_the_lock_when_it_is_released() {
        let locks = LocalLocks::default();
        let held = locks.lock("c", Duration::from_millis(50)).await.unwrap();
        let l2 = locks.clone();
        let (asking, asked) = tokio::sync::oneshot::channel();
        let mut waiter = tokio::spawn(async move {
            let _ = asking.send(());
            l2.lock("c", Duration::from_secs(30)).await.map(drop)
        });
        asked.await.unwrap();
        // The waiter is at the held lock once it has taken its two
        // references to the mutex (one to look it up, one to lock it), next
        // to the table's and the holder's.
        tokio::time::timeout(Duration::from_secs(10), async {
            while strong_count(&locks, "c") < 4 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the waiter to reach the lock");
        // However long it is given, it does not get a lock that is held.
        let early = tokio::time::timeout(Duration::from_millis(100), &mut waiter).await;
        assert!(
            early.is_err(),
            "the waiter got a lock that is held: {early:?}"
        );
        assert_eq!(locks.active(), 1);
        drop(held);
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the waiter to get the released lock")
            .unwrap()
            .unwrap();
        assert_eq!(locks.active(), 0);
    }

    /// References to contact `c`'s mutex: the table's, the holder's, and
    /// those of lockers on their way.
    fn strong_count(locks: &LocalLocks, c: &str) -> usize {
        let table = locks.table.lock().unwrap();
        table.get(c).map_or(0, Arc::strong_count)
    }
}
