//! The waiting requests of one model version, in arrival order: a plain data
//! structure, with no threads, locks or clocks.
//!
//! Entries live in a slab and the arrival order is a deque of slot ids, so
//! every operation a busy server repeats is cheap whatever the queue holds:
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
    order: VecDeque<SlotId>,
    live: usize,
}

impl<J> Default for Queue<J> {
    fn default() -> Self {
        Queue {
            slots: Vec::new(),
            free: Vec::new(),
            order: VecDeque::new(),
            live: 0,
        }
    }
}

/// Stale ids tolerated beyond the live count before the order is compacted.
const SLACK: usize = 64;

impl<J> Queue<J> {
    /// Entries waiting (abandoned and taken ones excluded).
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Appends an entry; the caller checks capacity with [`Queue::len`].
    pub fn push(&mut self, waiting: Waiting, job: J) -> SlotId {
        let entry = Some(Queued { waiting, job });
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
        self.order.push_back(id);
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
        self.trim();
        Some(entry)
    }

    /// Takes the entries at `ids` (from [`Queue::waiting`]), in that order.
    pub fn take(&mut self, ids: &[SlotId]) -> Vec<Queued<J>> {
        ids.iter().filter_map(|&id| self.remove(id)).collect()
    }

    /// The waiting entries, oldest first.
    pub fn waiting(&self) -> impl Iterator<Item = (SlotId, &Waiting)> {
        self.order.iter().filter_map(|&id| {
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

    /// Drops stale ids from the front, and compacts the order when stale
    /// ids outnumber live entries.
    fn trim(&mut self) {
        while let Some(&front) = self.order.front() {
            if self.is_live(front) {
                break;
            }
            self.order.pop_front();
        }
        if self.order.len() > 2 * self.live + SLACK {
            let mut order = std::mem::take(&mut self.order);
            order.retain(|&id| self.is_live(id));
            self.order = order;
        }
    }

    /// Removes and returns every waiting entry, oldest first.
    #[cfg(test)]
    pub(crate) fn drain(&mut self) -> Vec<Queued<J>> {
        let ids: Vec<SlotId> = self.waiting().map(|(id, _)| id).collect();
        self.take(&ids)
    }

    /// Ids held in the order, stale ones included (for tests of the bound).
    #[cfg(test)]
    pub(crate) fn order_len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;

    fn waiting(rows: usize) -> Waiting {
        Waiting {
            rows,
            key: Box::new([0]),
            enqueued: Instant::now(),
        }
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
        let a = q.push(waiting(1), 'a');
        let b = q.push(waiting(2), 'b');
        q.push(waiting(1), 'c');
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
        let old = q.push(waiting(1), 1);
        q.remove(old);
        let new = q.push(waiting(1), 2);
        assert_ne!(old, new);
        assert!(q.remove(old).is_none());
        assert_eq!(q.len(), 1);
        assert_eq!(q.remove(new).map(|e| e.job), Some(2));
    }

    #[test]
    fn stale_ids_stay_within_a_constant_factor_of_live_entries() {
        let mut q = Queue::default();
        let head = q.push(waiting(1), 0);
        // The head stays, so stale ids behind it cannot leave from the front.
        for i in 1..10_000 {
            let id = q.push(waiting(1), i);
            q.remove(id);
            assert!(q.order_len() <= 2 * q.len() + SLACK + 1, "at {i}");
        }
        assert_eq!(q.len(), 1);
        assert_eq!(q.take(&[head]).len(), 1);
        assert_eq!(q.order_len(), 0);
    }
}
