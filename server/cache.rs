//! Triton's response cache: answers to requests already seen, kept in
//! memory and given again without running the model.
//!
//! An answer is found by its model, its version *load* (a reloaded version
//! never answers from what the previous load computed), the outputs asked
//! for, and every input's name, datatype, shape and exact bytes. Keys are
//! hashed with a key drawn at start (SipHash), and the hashed bytes'
//! length is part of the key, so colliding requests are not something a
//! client can construct. The cache is bounded in bytes and evicts the
//! least recently used answers.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Mutex;

use lru::LruCache;

use crate::tensor::{DecodedRequest, Tensor};

/// What finds an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    /// The version load the answer belongs to.
    load: u64,
    /// The request's hash.
    hash: u64,
    /// Bytes hashed: a second check against collisions.
    len: usize,
}

/// One cached answer and what it costs.
#[derive(Debug, Clone)]
struct Answer {
    outputs: Vec<Tensor>,
    bytes: usize,
}

#[derive(Debug)]
struct Inner {
    entries: LruCache<CacheKey, Answer>,
    bytes: usize,
}

/// The server's response cache.
#[derive(Debug)]
pub(crate) struct ResponseCache {
    capacity: usize,
    hasher: RandomState,
    inner: Mutex<Inner>,
}

/// Bytes an entry costs beyond its tensors (names, shapes, bookkeeping).
const OVERHEAD: usize = 128;

fn cost(outputs: &[Tensor]) -> usize {
    outputs
        .iter()
        .map(|t| t.data.len() + t.name.len() + 8 * t.shape.len() + 64)
        .sum::<usize>()
        + OVERHEAD
}

impl ResponseCache {
    /// A cache of at most `capacity` bytes.
    pub(crate) fn new(capacity: usize) -> ResponseCache {
        ResponseCache {
            capacity,
            hasher: RandomState::new(),
            inner: Mutex::new(Inner {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing panics while holding the lock.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key of `request` to version load `load`.
    pub(crate) fn key(&self, load: u64, request: &DecodedRequest) -> CacheKey {
        let mut hasher = self.hasher.build_hasher();
        let mut len = 0;
        request.outputs.hash(&mut hasher);
        for input in &request.inputs {
            input.name.hash(&mut hasher);
            input.datatype.hash(&mut hasher);
            input.shape.hash(&mut hasher);
            input.data.hash(&mut hasher);
            len += input.data.len();
        }
        CacheKey {
            load,
            hash: hasher.finish(),
            len,
        }
    }

    /// The answer kept for `key`, if any (it becomes the most recently
    /// used).
    pub(crate) fn get(&self, key: &CacheKey) -> Option<Vec<Tensor>> {
        self.lock().entries.get(key).map(|a| a.outputs.clone())
    }

    /// Keeps `outputs` as the answer for `key`, evicting the least recently
    /// used answers to stay within the capacity. An answer larger than the
    /// whole cache is not kept.
    pub(crate) fn put(&self, key: CacheKey, outputs: &[Tensor]) {
        let bytes = cost(outputs);
        if bytes > self.capacity {
            return;
        }
        let mut inner = self.lock();
        if let Some(old) = inner.entries.put(
            key,
            Answer {
                outputs: outputs.to_vec(),
                bytes,
            },
        ) {
            inner.bytes -= old.bytes;
        }
        inner.bytes += bytes;
        while inner.bytes > self.capacity {
            let Some((_, evicted)) = inner.entries.pop_lru() else {
                break;
            };
            inner.bytes -= evicted.bytes;
        }
    }

    /// Bytes in use and entries held.
    pub(crate) fn usage(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.bytes, inner.entries.len())
    }

    /// At most this many bytes.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::tensor::DataType;

    fn request(value: u8) -> DecodedRequest {
        DecodedRequest {
            inputs: vec![Tensor {
                name: "x".into(),
                datatype: DataType::Uint8,
                shape: vec![1, 4],
                data: Bytes::from(vec![value; 4]),
            }],
            outputs: vec![0],
            batch_size: Some(1),
        }
    }

    fn answer(size: usize) -> Vec<Tensor> {
        vec![Tensor {
            name: "y".into(),
            datatype: DataType::Uint8,
            shape: vec![1, size],
            data: Bytes::from(vec![7u8; size]),
        }]
    }

    #[test]
    fn the_same_request_to_the_same_load_finds_its_answer() {
        let cache = ResponseCache::new(1 << 20);
        let key = cache.key(1, &request(1));
        assert!(cache.get(&key).is_none());
        cache.put(key, &answer(10));
        assert_eq!(cache.get(&cache.key(1, &request(1))), Some(answer(10)));
        // Other bytes, another load (a reload), other outputs: not found.
        assert!(cache.get(&cache.key(1, &request(2))).is_none());
        assert!(cache.get(&cache.key(2, &request(1))).is_none());
        let mut other_outputs = request(1);
        other_outputs.outputs = vec![1];
        assert!(cache.get(&cache.key(1, &other_outputs)).is_none());
    }

    #[test]
    fn the_least_recently_used_answers_go_first_and_the_size_holds() {
        let one = cost(&answer(1000));
        let cache = ResponseCache::new(3 * one);
        let keys: Vec<CacheKey> = (0..4).map(|i| cache.key(1, &request(i))).collect();
        cache.put(keys[0], &answer(1000));
        cache.put(keys[1], &answer(1000));
        cache.put(keys[2], &answer(1000));
        // 0 is used again, so 1 is now the least recently used.
        assert!(cache.get(&keys[0]).is_some());
        cache.put(keys[3], &answer(1000));
        assert!(cache.get(&keys[1]).is_none(), "evicted");
        assert!(cache.get(&keys[0]).is_some() && cache.get(&keys[3]).is_some());
        let (bytes, entries) = cache.usage();
        assert_eq!(entries, 3);
        assert!(bytes <= cache.capacity());
        // Larger than the whole cache: not kept.
        cache.put(cache.key(1, &request(9)), &answer(10 * one));
        assert_eq!(cache.usage().1, 3);
    }
}
