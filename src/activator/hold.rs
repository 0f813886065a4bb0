//! The hold queue: requests waiting for a place on a pod, oldest first, bounded.

use std::collections::VecDeque;

use tokio::sync::oneshot;

/// Identifies a waiter so that it can leave the queue (timeout, client gone).
pub type WaiterId = u64;

/// The queue already holds as many requests as it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// Bounded FIFO of waiters; each gets at most one `T` (a place on a pod).
#[derive(Debug)]
pub struct HoldQueue<T> {
    waiters: VecDeque<(WaiterId, oneshot::Sender<T>)>,
    capacity: usize,
    next_id: WaiterId,
}

impl<T> HoldQueue<T> {
    pub fn new(capacity: usize) -> Self {
        Self {
            waiters: VecDeque::new(),
            capacity,
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

    /// Adds a waiter at the back.
    pub fn push(&mut self) -> Result<(WaiterId, oneshot::Receiver<T>), QueueFull> {
        if self.waiters.len() >= self.capacity {
            return Err(QueueFull);
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
                true
            }
            None => false,
        }
    }

    /// Hands `value` to the oldest waiter still listening; gives it back when none is.
    pub fn release_one(&mut self, mut value: T) -> Result<(), T> {
        while let Some((_, sender)) = self.waiters.pop_front() {
            match sender.send(value) {
                Ok(()) => return Ok(()),
                Err(returned) => value = returned,
            }
        }
        Err(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_is_bounded() {
        let mut queue = HoldQueue::<u32>::new(2);
        let _a = queue.push().expect("room for one");
        let _b = queue.push().expect("room for two");
        assert_eq!(queue.push().map(|_| ()), Err(QueueFull));
        assert_eq!(queue.len(), 2);
    }

    #[test]
    fn releases_go_to_the_oldest_waiter_first() {
        let mut queue = HoldQueue::new(10);
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
        let mut queue = HoldQueue::new(1);
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
        let mut queue = HoldQueue::new(3);
        let (_, gone) = queue.push().expect("room");
        let (_, mut alive) = queue.push().expect("room");
        drop(gone);
        assert_eq!(queue.release_one(5), Ok(()));
        assert_eq!(alive.try_recv(), Ok(5));
        assert!(queue.is_empty());
    }
}
