//! A semaphore whose size can change while permits are out (hot reload of
//! pool_size, max_clients, max_client_conn).
//!
//! Growing adds permits. Shrinking forgets the free permits at once and
//! owes the rest: a background task takes permits as holders return them
//! and forgets them, until the debt is paid (or a later grow cancels it).
//! Nobody is interrupted: the new size is reached as work finishes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Capacity {
    sem: Arc<Semaphore>,
    size: AtomicUsize,
    /// Permits still to be removed from `sem` after a shrink.
    owed: Arc<AtomicUsize>,
}

impl Capacity {
    pub fn new(size: usize) -> Self {
        Self {
            sem: Arc::new(Semaphore::new(size)),
            size: AtomicUsize::new(size),
            owed: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn size(&self) -> usize {
        self.size.load(Ordering::Relaxed)
    }

    /// Permits held now (by clients, connections...).
    pub fn in_use(&self) -> usize {
        (self.size() + self.owed.load(Ordering::Relaxed))
            .saturating_sub(self.sem.available_permits())
    }

    /// A shrink is still waiting for permits to come back.
    pub fn owes(&self) -> bool {
        self.owed.load(Ordering::Relaxed) > 0
    }

    pub fn semaphore(&self) -> &Arc<Semaphore> {
        &self.sem
    }

    pub fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.sem.clone().try_acquire_owned().ok()
    }

    /// Changes the size. Must run inside a tokio runtime when shrinking
    /// below what is in use (the debt collector is a task).
    pub fn resize(&self, new: usize) {
        let old = self.size.swap(new, Ordering::Relaxed);
        if new >= old {
            let mut grow = new - old;
            // A pending shrink is cancelled first.
            let _ = self
                .owed
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |o| {
                    let pay = o.min(grow);
                    Some(o - pay)
                })
                .map(|o| grow -= o.min(grow));
            self.sem.add_permits(grow);
            return;
        }
        let shrink = old - new;
        let forgotten = self.sem.forget_permits(shrink);
        let rest = shrink - forgotten;
        if rest == 0 {
            return;
        }
        if self.owed.fetch_add(rest, Ordering::Relaxed) > 0 {
            return; // a collector is already running
        }
        let (sem, owed) = (self.sem.clone(), self.owed.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                while owed.load(Ordering::Relaxed) > 0 {
                    let Ok(permit) = sem.clone().acquire_owned().await else {
                        return;
                    };
                    let paid = owed
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |o| o.checked_sub(1));
                    if paid.is_ok() {
                        permit.forget();
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shrinks_as_holders_leave_and_grows_at_once() {
        let c = Capacity::new(3);
        let a = c.try_acquire();
        let b = c.try_acquire();
        assert!(a.is_some() && b.is_some());
        assert_eq!(c.in_use(), 2);
        c.resize(1);
        assert_eq!(c.size(), 1);
        assert!(c.try_acquire().is_none(), "the free permit was removed");
        drop(a);
        tokio::task::yield_now().await;
        assert!(
            c.try_acquire().is_none(),
            "the returned permit paid the debt"
        );
        drop(b);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let one = c.try_acquire();
        assert!(one.is_some());
        assert!(c.try_acquire().is_none());
        drop(one);
        c.resize(4);
        let held: Vec<_> = (0..4).filter_map(|_| c.try_acquire()).collect();
        assert_eq!(held.len(), 4);
        assert!(c.try_acquire().is_none());
    }

    #[tokio::test]
    async fn a_grow_cancels_a_pending_shrink() {
        let c = Capacity::new(2);
        let a = c.try_acquire();
        let b = c.try_acquire();
        c.resize(0); // owes 2
        c.resize(2); // cancels the debt: nothing to add
        drop(a);
        drop(b);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let held: Vec<_> = (0..3).filter_map(|_| c.try_acquire()).collect();
        assert_eq!(held.len(), 2);
    }
}
