//! Token buckets kept in this process, with a bound on the keys they hold.
//!
//! Keys are chosen by clients (emails, addresses), so the map cannot grow with them: each of
//! [`SHARDS`] shards keeps two generations of at most [`GENERATION`] keys. A key looked up in
//! the older generation moves to the newer one; when the newer one is full, the older one is
//! dropped whole. A key untouched for a generation is forgotten, which gives it a full bucket
//! again: exactly what it would have had after a pause. A flood of new keys forgets others
//! sooner, so an in-process limiter is a first line only: per-account limits that must hold
//! across tasks are kept in the store ([`crate::store::LimitStore::take_rate`]), per-address ones at
//! the edge. Every operation is O(1) under one shard's lock: no sweep ever runs.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shards of a limiter: keys spread over them by hash, so checks rarely wait for each other.
const SHARDS: usize = 16;
/// Keys of one generation of one shard.
const GENERATION: usize = 2048;
/// The most keys one limiter holds: two generations of every shard (65,536).
pub const MAX_KEYS: usize = SHARDS * 2 * GENERATION;

type Bucket = (f64, Instant);

#[derive(Default)]
struct Shard {
    current: HashMap<u64, Bucket>,
    previous: HashMap<u64, Bucket>,
}

impl Shard {
    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// The key's bucket, moved into the current generation; `None` when it is not held.
    fn take(&mut self, key: u64) -> Option<Bucket> {
        self.current.remove(&key).or_else(|| self.previous.remove(&key))
    }

    fn put(&mut self, key: u64, b: Bucket) {
        if self.current.len() >= GENERATION {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, b);
    }
}

pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    shards: Vec<Mutex<Shard>>,
    /// Keys are hashed with a per-process random key: the map holds 8 bytes a key whatever
    /// its length, and a client cannot pick keys that collide.
    hasher: RandomState,
    entries: AtomicI64,
}

impl RateLimiter {
    pub fn new(per_minute: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            per_second: f64::from(per_minute.max(1)) / 60.0,
            burst: f64::from(burst.max(1)),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            entries: AtomicI64::new(0),
        }
    }

    /// Takes one token for `key`, or says how long until one is available.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let h = self.hasher.hash_one(key);
        let mut shard = self.shards[(h as usize) % SHARDS].lock().unwrap_or_else(|p| p.into_inner());
        let before = shard.len();
        let (mut tokens, last) = shard.take(h).unwrap_or((self.burst, now));
        tokens = (tokens + now.saturating_duration_since(last).as_secs_f64() * self.per_second).min(self.burst);
        let result = if tokens >= 1.0 {
            tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - tokens) / self.per_second))
        };
        shard.put(h, (tokens, now));
        let delta = shard.len() as i64 - before as i64;
        drop(shard);
        if delta != 0 {
            self.entries.fetch_add(delta, Ordering::Relaxed);
        }
        result
    }

    /// The keys held now (at most [`MAX_KEYS`]).
    pub fn entries(&self) -> usize {
        self.entries.load(Ordering::Relaxed).max(0) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let r = RateLimiter::new(60, 2);
        let t0 = Instant::now();
        assert!(r.check("u", t0).is_ok());
        assert!(r.check("u", t0).is_ok());
        let wait = r.check("u", t0).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(r.check("other", t0).is_ok());
        assert!(r.check("u", t0 + Duration::from_secs(1)).is_ok());
    }

    /// A million attacker-chosen keys: the limiter never holds more than its bound, each check
    /// stays O(1) (the whole run is timed loosely: a sweep per check would take minutes), and a
    /// key in active use keeps its bucket through the flood.
    #[test]
    fn keys_are_bounded_and_active_keys_survive_a_flood() {
        let r = RateLimiter::new(60, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            r.check("victim-of-a-guess", t0).unwrap();
        }
        let started = Instant::now();
        let mut max = 0;
        for i in 0..1_000_000u32 {
            let _ = r.check(&format!("random-{i}@example.com"), t0);
            if i % 1000 == 0 {
                // The spent key is used all along, so it stays in the newest generation.
                assert!(r.check("victim-of-a-guess", t0).is_err(), "a flood of new keys reset an active bucket");
            }
            max = max.max(r.entries());
        }
        assert!(max <= MAX_KEYS, "{max} keys held, bound {MAX_KEYS}");
        assert!(max >= MAX_KEYS / 2, "the bound is used: {max}");
        let held: usize = r.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert_eq!(held, r.entries(), "the count agrees with the maps");
        assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());
    }
}
