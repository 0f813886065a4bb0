//! The hold queue: requests waiting for a place on a pod, oldest first, bounded per function
//! and, through a [`HoldLimit`] every queue shares, across the activator.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::oneshot;

/// Identifies a waiter so that it can leave the queue (timeout, client gone).
pub type WaiterId = u64;

/// Why a request could not be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldRefused {
    /// The function's queue already holds as many requests as it may.
    QueueFull,
    /// The activator already holds as many requests as it may, all functions together.
    LimitReached,
}

/// How many requests the activator holds, all functions together, and how many it may.
#[derive(Debug)]
pub struct HoldLimit {
    held: AtomicUsize,
    max: usize,
}

impl HoldLimit {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            held: AtomicUsize::new(0),
            max,
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    fn take_one(&self) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held < self.max).then_some(held + 1)
            })
            .is_ok()
    }

    fn give_back(&self, count: usize) {
        self.held.fetch_sub(count, Ordering::AcqRel);
    }
}

/// Bounded FIFO of waiters; each gets at most one `T` (a place on a pod).
#[derive(Debug)]
pub struct HoldQueue<T> {
    waiters: VecDeque<(WaiterId, oneshot::Sender<T>)>,
    capacity: usize,
    limit: Arc<HoldLimit>,
    next_id: WaiterId,
}

impl<T> HoldQueue<T> {
    /// A queue of `capacity` waiters at most, counted in the activator's `limit` too.
    pub fn new(capacity: usize, limit: Arc<HoldLimit>) -> Self {
        Self {
            waiters: VecDeque::new(),
            capacity,
            limit,
            next_id: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.waiters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The activator-wide limit this queue counts in.
    pub fn limit(&self) -> &HoldLimit {
        &self.limit
    }

    /// Adds a waiter at the back.
    pub fn push(&mut self) -> Result<(WaiterId, oneshot::Receiver<T>), HoldRefused> {
        if self.waiters.len() >= self.capacity {
            return Err(HoldRefused::QueueFull);
        }
        if !self.limit.take_one() {
            return Err(HoldRefused::LimitReached);
        }
        self.next_id += 1;
        let (sender, receiver) = oneshot::channel();
        self.waiters.push_back((self.next_id, sender));
        Ok((self.next_id, receiver))
    }

    /// Takes a waiter out of the queue (it stopped waiting); false when it was not there.
    pub fn remove(&mut self, id: WaiterId) -> bool {
        match self.waiters.iter().position(|(waiter, _)| *waiter == id) {
            Some(index) => {
                self.waiters.remove(index);
                self.limit.give_back(1);
                true
            }
            None => false,
        }
    }

    /// Hands `value` to the oldest waiter still listening; gives it back when none is.
    pub fn release_one(&mut self, mut value: T) -> Result<(), T> {
        while let Some((_, sender)) = self.waiters.pop_front() {
            self.limit.give_back(1);
            match sender.send(value) {
                Ok(()) => return Ok(()),
                Err(returned) => value = returned,
            }
        }
        Err(value)
    }
}

impl<T> Drop for HoldQueue<T> {
    fn drop(&mut self) {
        self.limit.give_back(self.waiters.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue<T>(capacity: usize) -> HoldQueue<T> {
        HoldQueue::new(capacity, HoldLimit::new(usize::MAX))
    }

    #[test]
    fn queue_is_bounded() {
        let mut queue = queue::<u32>(2);
        let _a = queue.push().expect("room for one");
        let _b = queue.push().expect("room for two");
        assert_eq!(queue.push().map(|_| ()), Err(HoldRefused::QueueFull));
        assert_eq!(queue.len(), 2);
    }

    #[test]
    fn the_activator_limit_bounds_every_queue_together() {
        let limit = HoldLimit::new(3);
        let mut thumbnails = HoldQueue::<u32>::new(10, limit.clone());
        let mut reports = HoldQueue::<u32>::new(10, limit.clone());
        let (first, _first) = thumbnails.push().expect("room");
        let (_, _second) = thumbnails.push().expect("room");
        let (_, _third) = reports.push().expect("room");
        assert_eq!(reports.push().map(|_| ()), Err(HoldRefused::LimitReached));
        assert_eq!(limit.held(), 3);

        // Every way out of a queue makes room: leaving, being served, the queue going away.
        assert!(thumbnails.remove(first));
        assert_eq!(limit.held(), 2);
        assert_eq!(thumbnails.release_one(7), Ok(()));
        assert_eq!(limit.held(), 1);
        drop(reports);
        assert_eq!(limit.held(), 0);
        let _again = thumbnails.push().expect("room again");
        assert_eq!(limit.held(), 1);
    }

    #[test]
    fn releases_go_to_the_oldest_waiter_first() {
        let mut queue = queue(10);
        let (_, mut first) = queue.push().expect("room");
        let (_, mut second) = queue.push().expect("room");
        assert_eq!(queue.release_one(7), Ok(()));
        assert_eq!(first.try_recv(), Ok(7));
        assert!(second.try_recv().is_err());
        assert_eq!(queue.release_one(8), Ok(()));
        assert_eq!(second.try_recv(), Ok(8));
        assert_eq!(queue.release_one(9), Err(9), "nobody waits");
    }

    #[test]
    fn a_waiter_that_left_makes_room_and_gets_nothing() {
        let mut queue = queue(1);
        let (id, receiver) = queue.push().expect("room");
        assert!(queue.remove(id));
        drop(receiver);
        assert!(queue.is_empty());
        let (_, mut next) = queue.push().expect("room again");
        assert_eq!(queue.release_one(1), Ok(()));
        assert_eq!(next.try_recv(), Ok(1));
    }

    #[test]
    fn release_skips_waiters_whose_receiver_is_gone() {
        let mut queue = queue(3);
        let (_, gone) = queue.push().expect("room");
        let (_, mut alive) = queue.push().expect("room");
        drop(gone);
        assert_eq!(queue.release_one(5), Ok(()));
        assert_eq!(alive.try_recv(), Ok(5));
        assert!(queue.is_empty());
    }
}
