//! The wait queue: FIFO per owner, owners served round-robin, so one identity flooding the
//! server cannot starve another.

use std::collections::{HashMap, VecDeque};

/// Something that waits in the queue on behalf of an owner.
pub(crate) trait Queued {
    /// The owner (identity id) it belongs to.
    fn owner(&self) -> &str;
    /// Whether its client gave up (it should be dropped, not admitted).
    fn abandoned(&self) -> bool;
}

/// Per-owner FIFO queues visited in turn.
#[derive(Debug)]
pub(crate) struct FairQueue<T> {
    queues: HashMap<String, VecDeque<T>>,
    /// Owners with waiting items, in the order they are served next.
    turns: VecDeque<String>,
    len: usize,
}

impl<T: Queued> FairQueue<T> {
    pub fn new() -> Self {
        FairQueue {
            queues: HashMap::new(),
            turns: VecDeque::new(),
            len: 0,
        }
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `item` at the back of its owner's queue.
    pub fn push(&mut self, item: T) {
        let owner = item.owner().to_owned();
        let queue = self.queues.entry(owner.clone()).or_default();
        if queue.is_empty() {
            self.turns.push_back(owner);
        }
        queue.push_back(item);
        self.len += 1;
    }

    /// The next item: the oldest of the owner whose turn it is; that owner goes to the back.
    pub fn pop(&mut self) -> Option<T> {
        let owner = self.turns.pop_front()?;
        let queue = self.queues.get_mut(&owner)?;
        let item = queue.pop_front();
        if queue.is_empty() {
            self.queues.remove(&owner);
        } else {
            self.turns.push_back(owner);
        }
        if item.is_some() {
            self.len -= 1;
        }
        item
    }

    /// Drops abandoned items; returns how many.
    pub fn drop_abandoned(&mut self) -> usize {
        let before = self.len;
        for queue in self.queues.values_mut() {
            queue.retain(|item| !item.abandoned());
        }
        self.queues.retain(|_, queue| !queue.is_empty());
        let queues = &self.queues;
        self.turns.retain(|owner| queues.contains_key(owner));
        self.len = self.queues.values().map(VecDeque::len).sum();
        before - self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Item(&'static str, u32, bool);

    impl Queued for Item {
        fn owner(&self) -> &str {
            self.0
        }
        fn abandoned(&self) -> bool {
            self.2
        }
    }

    #[test]
    fn owners_take_turns_and_each_is_fifo() {
        let mut queue = FairQueue::new();
        for i in 0..4 {
            queue.push(Item("flood", i, false));
        }
        queue.push(Item("quiet", 0, false));
        queue.push(Item("other", 0, false));
        let order: Vec<(&str, u32)> = std::iter::from_fn(|| queue.pop())
            .map(|i| (i.0, i.1))
            .collect();
        assert_eq!(
            order,
            vec![
                ("flood", 0),
                ("quiet", 0),
                ("other", 0),
                ("flood", 1),
                ("flood", 2),
                ("flood", 3)
            ]
        );
        assert!(queue.is_empty());
    }

    #[test]
    fn a_newcomer_is_served_within_one_round() {
        let mut queue = FairQueue::new();
        for i in 0..100 {
            queue.push(Item("flood", i, false));
        }
        queue.pop();
        queue.push(Item("newcomer", 0, false));
        let position = std::iter::from_fn(|| queue.pop()).position(|i| i.0 == "newcomer");
        assert_eq!(
            position,
            Some(1),
            "one flood item (its turn), then the newcomer"
        );
    }

    #[test]
    fn abandoned_items_are_dropped_and_counted() {
        let mut queue = FairQueue::new();
        queue.push(Item("a", 0, true));
        queue.push(Item("b", 0, false));
        queue.push(Item("a", 1, false));
        queue.push(Item("c", 0, true));
        assert_eq!(queue.drop_abandoned(), 2);
        assert_eq!(queue.len(), 2);
        let order: Vec<(&str, u32)> = std::iter::from_fn(|| queue.pop())
            .map(|i| (i.0, i.1))
            .collect();
        assert_eq!(order, vec![("a", 1), ("b", 0)]);
    }
}
