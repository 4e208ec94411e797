//! A bounded queue that never makes the producer wait: when full, the oldest item makes
//! room for the new one. One consumer waits for items asynchronously.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

/// What one [`Queue::push_all`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Items now in the queue that were not before (pushed minus evicted and refused).
    pub added: usize,
    /// Items that did not make it: older ones evicted to make room, and, after
    /// [`Queue::close`], every item pushed.
    pub dropped: usize,
}

/// Bounded multi-producer, single-consumer queue with drop-oldest overflow.
#[derive(Debug)]
pub struct Queue<T> {
    state: Mutex<State<T>>,
    capacity: usize,
    ready: Notify,
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

impl<T> Queue<T> {
    /// An open queue holding at most `capacity` (at least 1) items.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Queue {
            state: Mutex::new(State {
                items: VecDeque::with_capacity(capacity.min(4096)),
                closed: false,
            }),
            capacity,
            ready: Notify::new(),
        }
    }

    // The lock is only held for queue operations, which cannot panic halfway; a poisoned
    // lock still holds a consistent queue.
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `items`, evicting the oldest ones beyond capacity; never waits (the lock
    /// is held for the copy only). After [`close`](Self::close) everything is refused.
    pub fn push_all(&self, items: impl IntoIterator<Item = T>) -> Pushed {
        let mut pushed = Pushed::default();
        let mut state = self.lock();
        let before = state.items.len();
        if state.closed {
            pushed.dropped = items.into_iter().count();
            return pushed;
        }
        for item in items {
            if state.items.len() == self.capacity {
                state.items.pop_front();
                pushed.dropped += 1;
            }
            state.items.push_back(item);
        }
        let after = state.items.len();
        drop(state);
        pushed.added = after - before;
        if after > 0 {
            self.ready.notify_one();
        }
        pushed
    }

    /// Takes up to `max` of the oldest items without waiting.
    #[cfg(test)]
    pub fn try_pop(&self, max: usize) -> Vec<T> {
        let mut state = self.lock();
        let n = max.min(state.items.len());
        state.items.drain(..n).collect()
    }

    /// Waits for items and takes up to `max` (at least 1) of the oldest; `None` once the
    /// queue is closed and empty.
    pub async fn pop(&self, max: usize) -> Option<Vec<T>> {
        let max = max.max(1);
        loop {
            // Registered before looking, so a push in between still wakes this consumer.
            let ready = self.ready.notified();
            {
                let mut state = self.lock();
                if !state.items.is_empty() {
                    let n = max.min(state.items.len());
                    return Some(state.items.drain(..n).collect());
                }
                if state.closed {
                    return None;
                }
            }
            ready.await;
        }
    }

    /// Refuses further items; what is queued stays to be taken.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// Items waiting now.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// The bound.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn keeps_the_newest_when_full() {
        let q = Queue::new(3);
        assert_eq!(
            q.push_all([1, 2]),
            Pushed {
                added: 2,
                dropped: 0
            }
        );
        assert_eq!(
            q.push_all([3, 4, 5]),
            Pushed {
                added: 1,
                dropped: 2
            }
        );
        assert_eq!(q.len(), 3);
        assert_eq!(q.try_pop(10), vec![3, 4, 5]);
        assert_eq!(
            q.push_all(0..10),
            Pushed {
                added: 3,
                dropped: 7
            }
        );
        assert_eq!(q.try_pop(2), vec![7, 8]);
        assert_eq!(q.try_pop(2), vec![9]);
        assert!(q.try_pop(2).is_empty());
    }

    #[test]
    fn zero_capacity_means_one() {
        let q = Queue::new(0);
        assert_eq!(q.capacity(), 1);
        assert_eq!(
            q.push_all([1, 2]),
            Pushed {
                added: 1,
                dropped: 1
            }
        );
        assert_eq!(q.try_pop(5), vec![2]);
    }

    #[test]
    fn closed_queue_refuses_but_keeps_what_it_has() {
        let q = Queue::new(4);
        q.push_all([1, 2]);
        q.close();
        assert_eq!(
            q.push_all([3, 4, 5]),
            Pushed {
                added: 0,
                dropped: 3
            }
        );
        assert_eq!(q.try_pop(10), vec![1, 2]);
    }

    #[tokio::test]
    async fn pop_waits_for_a_push_and_ends_after_close() {
        let q = Arc::new(Queue::new(8));
        let consumer = {
            let q = Arc::clone(&q);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while let Some(batch) = q.pop(2).await {
                    assert!(!batch.is_empty() && batch.len() <= 2);
                    seen.extend(batch);
                }
                seen
            })
        };
        for i in 0..5 {
            q.push_all([i]);
            tokio::task::yield_now().await;
        }
        q.push_all([5, 6, 7]);
        q.close();
        assert_eq!(consumer.await.unwrap(), (0..8).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn pop_returns_queued_items_after_close() {
        let q = Queue::new(8);
        q.push_all([1, 2, 3]);
        q.close();
        assert_eq!(q.pop(10).await, Some(vec![1, 2, 3]));
        assert_eq!(q.pop(10).await, None);
    }
}
