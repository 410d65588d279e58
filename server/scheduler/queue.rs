//! The waiting requests of one model version, by priority level and then in
//! arrival order: a plain data structure, with no threads, locks or clocks.
//!
//! Entries live in a slab and each priority level's arrival order is a
//! deque of slot ids, so every operation a busy server repeats is cheap
//! whatever the queue holds:
//! counting live entries (the admission check) is O(1); removing an entry
//! whose caller gave up is O(1) and frees its data at once; taking a batch
//! of k entries is O(k). A removed entry leaves a stale id in the order,
//! skipped when read and dropped from the front as it gets there; the order
//! is compacted when stale ids outnumber live ones, so it stays within a
//! constant factor of the live count (amortised O(1) per removal).

use std::collections::VecDeque;

use super::policy::Waiting;

/// Where an entry sits; stale once the entry is taken or abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotId {
    index: u32,
    generation: u32,
}

/// A queued request: what the policy sees, and the job itself.
#[derive(Debug)]
pub struct Queued<J> {
    /// What the policy sees.
    pub waiting: Waiting,
    /// The queued job.
    pub job: J,
    /// Its priority level (0 = the highest).
    level: usize,
}

#[derive(Debug)]
struct Slot<J> {
    generation: u32,
    entry: Option<Queued<J>>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Queue<J> {
    slots: Vec<Slot<J>>,
    free: Vec<u32>,
    /// One arrival order per priority level, highest first.
    orders: Vec<VecDeque<SlotId>>,
    /// Live entries per level.
    counts: Vec<usize>,
    live: usize,
}

impl<J> Default for Queue<J> {
    fn default() -> Self {
        Queue::with_levels(1)
    }
}

/// Stale ids tolerated beyond the live count before an order is compacted.
const SLACK: usize = 64;

impl<J> Queue<J> {
    /// A queue with `levels` priority levels (at least one).
    pub fn with_levels(levels: usize) -> Queue<J> {
        let levels = levels.max(1);
        Queue {
            slots: Vec::new(),
            free: Vec::new(),
            orders: (0..levels).map(|_| VecDeque::new()).collect(),
            counts: vec![0; levels],
            live: 0,
        }
    }

    /// Entries waiting (abandoned and taken ones excluded).
    pub fn len(&self) -> usize {
        self.live
    }

    /// Entries waiting at priority `level`.
    pub fn len_at(&self, level: usize) -> usize {
        self.counts.get(level).copied().unwrap_or(0)
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Appends an entry at priority `level` (clamped to the lowest); the
    /// caller checks capacity with [`Queue::len`] and [`Queue::len_at`].
    pub fn push(&mut self, level: usize, waiting: Waiting, job: J) -> SlotId {
        let level = level.min(self.orders.len() - 1);
        let entry = Some(Queued {
            waiting,
            job,
            level,
        });
        let id = match self.free.pop() {
            Some(index) => {
                let slot = &mut self.slots[index as usize];
                slot.entry = entry;
                SlotId {
                    index,
                    generation: slot.generation,
                }
            }
            None => {
                let index = u32::try_from(self.slots.len())
                    .expect("a queue holds fewer than 2^32 entries (capacity is at most 10^6)");
                self.slots.push(Slot {
                    generation: 0,
                    entry,
                });
                SlotId {
                    index,
                    generation: 0,
                }
            }
        };
        self.orders[level].push_back(id);
        self.counts[level] += 1;
        self.live += 1;
        id
    }

    /// Removes the entry at `id` if it is still waiting, and returns it (so
    /// the caller can drop it outside any lock).
    pub fn remove(&mut self, id: SlotId) -> Option<Queued<J>> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        let entry = slot.entry.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.index);
        self.live -= 1;
        self.counts[entry.level] -= 1;
        self.trim(entry.level);
        Some(entry)
    }

    /// Takes the entries at `ids` (from [`Queue::waiting`]), in that order.
    pub fn take(&mut self, ids: &[SlotId]) -> Vec<Queued<J>> {
        ids.iter().filter_map(|&id| self.remove(id)).collect()
    }

    /// The waiting entries in service order: by priority level, then
    /// oldest first.
    pub fn waiting(&self) -> impl Iterator<Item = (SlotId, &Waiting)> + Clone {
        self.orders.iter().flatten().filter_map(|&id| {
            let slot = &self.slots[id.index as usize];
            match &slot.entry {
                Some(queued) if slot.generation == id.generation => Some((id, &queued.waiting)),
                _ => None,
            }
        })
    }

    fn is_live(&self, id: SlotId) -> bool {
        let slot = &self.slots[id.index as usize];
        slot.generation == id.generation && slot.entry.is_some()
    }

    /// Drops stale ids from the front of `level`'s order, and compacts it
    /// when its stale ids outnumber its live entries.
    fn trim(&mut self, level: usize) {
        let mut order = std::mem::take(&mut self.orders[level]);
        while let Some(&front) = order.front() {
            if self.is_live(front) {
                break;
            }
            order.pop_front();
        }
        if order.len() > 2 * self.counts[level] + SLACK {
            order.retain(|&id| self.is_live(id));
        }
        self.orders[level] = order;
    }

    /// Removes and returns every waiting entry, in service order.
    #[cfg(test)]
    pub(crate) fn drain(&mut self) -> Vec<Queued<J>> {
        let ids: Vec<SlotId> = self.waiting().map(|(id, _)| id).collect();
        self.take(&ids)
    }

    /// Ids held in the orders, stale ones included (for tests of the bound).
    #[cfg(test)]
    pub(crate) fn order_len(&self) -> usize {
        self.orders.iter().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;

    fn waiting(rows: usize) -> Waiting {
        Waiting::new(rows, Box::new([0]), Instant::now())
    }

    fn jobs<J: Copy>(queue: &Queue<J>) -> Vec<J> {
        let ids: Vec<SlotId> = queue.waiting().map(|(id, _)| id).collect();
        ids.iter()
            .map(|id| {
                queue.slots[id.index as usize]
                    .entry
                    .as_ref()
                    .expect("waiting ids are live")
                    .job
            })
            .collect()
    }

    #[test]
    fn entries_wait_in_arrival_order_and_leave_once() {
        let mut q = Queue::default();
        let a = q.push(0, waiting(1), 'a');
        let b = q.push(0, waiting(2), 'b');
        q.push(0, waiting(1), 'c');
        assert_eq!(q.len(), 3);
        assert_eq!(jobs(&q), ['a', 'b', 'c']);
        assert_eq!(q.remove(b).map(|e| e.job), Some('b'));
        assert_eq!(q.remove(b).map(|e| e.job), None, "removed twice");
        assert_eq!(jobs(&q), ['a', 'c']);
        let taken: Vec<char> = q.take(&[a]).into_iter().map(|e| e.job).collect();
        assert_eq!(taken, ['a']);
        assert_eq!(q.len(), 1);
        assert_eq!(
            q.drain().into_iter().map(|e| e.job).collect::<Vec<_>>(),
            ['c']
        );
        assert!(q.is_empty());
    }

    #[test]
    fn a_reused_slot_does_not_answer_to_its_old_id() {
        let mut q = Queue::default();
        let old = q.push(0, waiting(1), 1);
        q.remove(old);
        let new = q.push(0, waiting(1), 2);
        assert_ne!(old, new);
        assert!(q.remove(old).is_none());
        assert_eq!(q.len(), 1);
        assert_eq!(q.remove(new).map(|e| e.job), Some(2));
    }

    #[test]
    fn stale_ids_stay_within_a_constant_factor_of_live_entries() {
        let mut q = Queue::default();
        let head = q.push(0, waiting(1), 0);
        // The head stays, so stale ids behind it cannot leave from the front.
        for i in 1..10_000 {
            let id = q.push(0, waiting(1), i);
            q.remove(id);
            assert!(q.order_len() <= 2 * q.len() + SLACK + 1, "at {i}");
        }
        assert_eq!(q.len(), 1);
        assert_eq!(q.take(&[head]).len(), 1);
        assert_eq!(q.order_len(), 0);
    }
}

#[cfg(test)]
mod level_tests {
    use tokio::time::Instant;

    use super::*;

    #[test]
    fn higher_priority_levels_are_served_first_and_counted_apart() {
        let mut q = Queue::with_levels(3);
        let w = || Waiting::new(1, Box::new([0]), Instant::now());
        q.push(2, w(), "low-1");
        q.push(0, w(), "high-1");
        q.push(1, w(), "mid-1");
        q.push(2, w(), "low-2");
        q.push(0, w(), "high-2");
        q.push(9, w(), "clamped-to-lowest");
        assert_eq!((q.len_at(0), q.len_at(1), q.len_at(2)), (2, 1, 3));
        let order: Vec<&str> = q.drain().into_iter().map(|e| e.job).collect();
        assert_eq!(
            order,
            [
                "high-1",
                "high-2",
                "mid-1",
                "low-1",
                "low-2",
                "clamped-to-lowest"
            ]
        );
        assert_eq!(q.len_at(2), 0);
    }
}
