//! Request throttling, per process: failed authentication per client address and per token
//! prefix, API requests per user, and inbound webhook calls per hook token. Each is a token
//! bucket (a limit per minute, refilled continuously, the whole minute's worth available at
//! once) kept in memory.
//!
//! Written here rather than taken from a crate: it is a few dozen lines over a `HashMap`, the
//! keys are our own (a user id, an address, a token's hash) and the answers feed the
//! `RateLimit-*` headers directly; a general limiter crate would bring its own clock and
//! concurrent map for the same arithmetic.
//!
//! Failed authentication never slows valid tokens: when an address or a token prefix is over its
//! budget of failures, a token this process has seen succeed is still looked up as usual; only
//! unknown tokens are refused with 429 without a database lookup, so a burst of bad tokens costs
//! the database nothing.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// The most keys a bucket map holds before full buckets are dropped.
const MAX_KEYS: usize = 100_000;

/// The most token hashes remembered as known good.
const MAX_KNOWN_GOOD: usize = 10_000;

/// How many leading characters of a token name its prefix for the failure budget.
const TOKEN_PREFIX_CHARS: usize = 12;

/// What one bucket said about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    /// Whether the request may go on.
    pub(crate) allowed: bool,
    /// The limit per minute.
    pub(crate) limit: u32,
    /// Requests left now.
    pub(crate) remaining: u32,
    /// Seconds until the bucket is full again (until one more request is allowed, when refused).
    pub(crate) reset: u64,
}

/// Token buckets by key, `per_minute` each; 0 never refuses.
pub(crate) struct Buckets {
    per_minute: u32,
    map: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Buckets {
    pub(crate) fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `key`'s bucket.
    pub(crate) fn take(&self, key: &str) -> Decision {
        self.apply(key, 1.0)
    }

    /// Whether `key`'s bucket is empty, without taking anything.
    pub(crate) fn is_empty(&self, key: &str) -> bool {
        !self.apply(key, 0.0).allowed
    }

    fn apply(&self, key: &str, cost: f64) -> Decision {
        let limit = self.per_minute;
        if limit == 0 {
            return Decision {
                allowed: true,
                limit,
                remaining: u32::MAX,
                reset: 0,
            };
        }
        let capacity = f64::from(limit);
        let per_second = capacity / 60.0;
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            // Forget the buckets that have refilled: they hold nothing a fresh one would not.
            map.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * per_second < capacity
            });
        }
        let (tokens, at) = map.entry(key.to_owned()).or_insert((capacity, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * per_second).min(capacity);
        *at = now;
        let allowed = *tokens >= 1.0;
        if allowed {
            *tokens -= cost;
        }
        let missing = if allowed {
            capacity - *tokens
        } else {
            1.0 - *tokens
        };
        Decision {
            allowed,
            limit,
            remaining: tokens.floor().max(0.0) as u32,
            reset: (missing / per_second).ceil().max(0.0) as u64,
        }
    }
}

/// The throttles of one API process.
pub(crate) struct Throttle {
    /// Failed authentications, by client address and by token prefix.
    auth_failures: Buckets,
    /// Requests per user.
    requests: Buckets,
    /// Inbound webhook calls per hook token.
    hooks: Buckets,
    /// Hashes of tokens that authenticated (never the tokens themselves).
    known_good: Mutex<HashSet<u64>>,
    hasher: RandomState,
}

impl Throttle {
    pub(crate) fn new(auth_failures: u32, requests: u32, hooks: u32) -> Self {
        Self {
            auth_failures: Buckets::new(auth_failures),
            requests: Buckets::new(requests),
            hooks: Buckets::new(hooks),
            known_good: Mutex::new(HashSet::new()),
            hasher: RandomState::new(),
        }
    }

    /// `Some(seconds)` when `token` may not even be looked up: the address or the token's
    /// prefix is over its failure budget and this process never saw the token succeed.
    pub(crate) fn auth_refused(&self, address: &str, token: &str) -> Option<u64> {
        let blocked = self.auth_failures.is_empty(&address_key(address))
            || self.auth_failures.is_empty(&prefix_key(token));
        if !blocked || self.is_known_good(token) {
            return None;
        }
        let wait = |key: &str| self.auth_failures.apply(key, 0.0).reset;
        Some(
            wait(&address_key(address))
                .max(wait(&prefix_key(token)))
                .max(1),
        )
    }

    /// Counts a failed authentication against the address and the token's prefix.
    pub(crate) fn auth_failed(&self, address: &str, token: Option<&str>) {
        self.auth_failures.take(&address_key(address));
        if let Some(token) = token {
            self.auth_failures.take(&prefix_key(token));
        }
    }

    /// Remembers that `token` authenticated.
    pub(crate) fn auth_succeeded(&self, token: &str) {
        let hash = self.hasher.hash_one(token);
        let mut known = self
            .known_good
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if known.len() >= MAX_KNOWN_GOOD {
            known.clear();
        }
        known.insert(hash);
    }

    fn is_known_good(&self, token: &str) -> bool {
        let hash = self.hasher.hash_one(token);
        self.known_good
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&hash)
    }

    /// One API request by `user`.
    pub(crate) fn request(&self, user: &str) -> Decision {
        self.requests.take(user)
    }

    /// One call of the inbound webhook `token` (keyed by its hash, never the token).
    pub(crate) fn hook_call(&self, token: &str) -> Decision {
        self.hooks.take(&self.hasher.hash_one(token).to_string())
    }
}

fn address_key(address: &str) -> String {
    format!("addr:{address}")
}

fn prefix_key(token: &str) -> String {
    let prefix: String = token.chars().take(TOKEN_PREFIX_CHARS).collect();
    format!("prefix:{prefix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_limit_then_refuses_and_says_when() {
        let buckets = Buckets::new(3);
        let taken: Vec<bool> = (0..4).map(|_| buckets.take("k").allowed).collect();
        assert_eq!(taken, vec![true, true, true, false]);
        let refused = buckets.take("k");
        assert_eq!((refused.limit, refused.remaining), (3, 0));
        assert!((1..=20).contains(&refused.reset), "{refused:?}");
        assert!(buckets.take("other").allowed, "keys are separate");
        assert!(Buckets::new(0).take("k").allowed, "0 never refuses");
    }

    #[test]
    fn failures_block_unknown_tokens_but_not_known_good_ones() {
        let throttle = Throttle::new(2, 0, 0);
        throttle.auth_succeeded("pilot_good-token-value");
        for _ in 0..2 {
            assert_eq!(throttle.auth_refused("10.9.9.9", "pilot_bad-1"), None);
            throttle.auth_failed("10.9.9.9", Some("pilot_bad-1"));
        }
        assert!(throttle.auth_refused("10.9.9.9", "pilot_bad-2").is_some());
        assert_eq!(
            throttle.auth_refused("10.9.9.9", "pilot_good-token-value"),
            None
        );
        assert_eq!(
            throttle.auth_refused("10.8.8.8", "other_token"),
            None,
            "another address"
        );
    }
}
