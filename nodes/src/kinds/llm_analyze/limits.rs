//! Provider limits: token buckets for requests and tokens per minute, a shared pause after a
//! `429 Retry-After`, and exponential backoff with jitter between retries.
//!
//! A bucket refills continuously at `per_minute / 61` per second and holds at most one
//! second's worth (at least one unit), so over any window of `T` seconds at most
//! `capacity + rate * T` is spent: within any 60 seconds that is at most `per_minute` (for
//! limits of 61 a minute and more; below that, at most one more), so the limit holds over
//! every minute, not just on average, while bursts stay short. Token estimates are charged before a request and corrected with the
//! `usage` the server reports; the bucket may go into debt, which later requests wait out.
//! Concurrency is bounded separately, by the number of worker threads.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

/// A continuously refilling token bucket that may go into debt.
#[derive(Clone, Debug)]
pub struct Bucket {
    /// Refill per second.
    rate: f64,
    capacity: f64,
    level: f64,
    last: Instant,
}

impl Bucket {
    /// A bucket for `per_minute` units, starting full.
    pub fn per_minute(per_minute: f64, now: Instant) -> Bucket {
        let rate = per_minute / 61.0;
        let capacity = rate.max(1.0);
        Bucket {
            rate,
            capacity,
            level: capacity,
            last: now,
        }
    }
    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.level = (self.level + dt * self.rate).min(self.capacity);
        self.last = now;
    }
    /// How long until `need` can be taken (a need above the capacity waits for a full bucket).
    pub fn wait(&mut self, need: f64, now: Instant) -> Duration {
        self.refill(now);
        let need = need.min(self.capacity);
        if self.level >= need {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((need - self.level) / self.rate)
        }
    }
    pub fn take(&mut self, n: f64) {
        self.level -= n;
    }
    /// Gives back (or charges more than) an earlier estimate.
    pub fn adjust(&mut self, delta: f64) {
        self.level = (self.level + delta).min(self.capacity);
    }
    pub fn capacity(&self) -> f64 {
        self.capacity
    }
}

struct State {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    paused_until: Option<Instant>,
}

/// The limits shared by every worker of one node.
pub struct Limits {
    state: Mutex<State>,
}

/// Why waiting for a permit ended without one.
#[derive(Debug, PartialEq, Eq)]
pub struct Cancelled;

impl Limits {
    pub fn new(requests_per_minute: Option<f64>, tokens_per_minute: Option<f64>) -> Limits {
        let now = Instant::now();
        Limits {
            state: Mutex::new(State {
                requests: requests_per_minute.map(|r| Bucket::per_minute(r, now)),
                tokens: tokens_per_minute.map(|t| Bucket::per_minute(t, now)),
                paused_until: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until one request of about `tokens` tokens may be sent, and charges it.
    pub fn acquire(&self, tokens: u64, cancel: &AtomicBool) -> Result<(), Cancelled> {
        loop {
            if cancel.load(Relaxed) {
                return Err(Cancelled);
            }
            let wait = {
                let mut s = self.lock();
                let now = Instant::now();
                let mut wait = s
                    .paused_until
                    .map(|p| p.saturating_duration_since(now))
                    .unwrap_or_default();
                if let Some(b) = &mut s.requests {
                    wait = wait.max(b.wait(1.0, now));
                }
                if let Some(b) = &mut s.tokens {
                    wait = wait.max(b.wait(tokens as f64, now));
                }
                if wait.is_zero() {
                    if let Some(b) = &mut s.requests {
                        b.take(1.0);
                    }
                    if let Some(b) = &mut s.tokens {
                        b.take(tokens as f64);
                    }
                    return Ok(());
                }
                wait
            };
            std::thread::sleep(wait.min(Duration::from_millis(25)));
        }
    }

    /// Corrects a request's token estimate with what the server reported.
    pub fn settle(&self, estimated: u64, actual: u64) {
        if let Some(b) = &mut self.lock().tokens {
            b.adjust(estimated as f64 - actual as f64);
        }
    }

    /// Holds every request until `until` (after a 429 with `Retry-After`).
    pub fn pause_until(&self, until: Instant) {
        let mut s = self.lock();
        if s.paused_until.is_none_or(|p| p < until) {
            s.paused_until = Some(until);
        }
    }
}

/// Sleeps for `d`, waking early when `cancel` is set. Returns false when cancelled.
pub fn sleep_unless(d: Duration, cancel: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    loop {
        if cancel.load(Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(25)));
    }
}

/// A uniform random number in [0, 1) (for jitter; not for anything secret).
pub fn random_unit() -> f64 {
    let mut h = RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    h.write_u128(nanos);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The wait before retry number `retry` (0 for the first retry): `base * 2^retry` capped at
/// `max`, with "equal jitter" (between half and all of it), and never less than the server's
/// `Retry-After`.
pub fn backoff(
    retry: u32,
    base: Duration,
    max: Duration,
    retry_after: Option<Duration>,
) -> Duration {
    let exp = base
        .checked_mul(1u32.checked_shl(retry.min(30)).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max);
    let jittered = exp.mul_f64(0.5 + 0.5 * random_unit());
    match retry_after {
        Some(r) => r.max(jittered),
        None => jittered,
    }
}

/// Parses `Retry-After` (seconds, possibly fractional) or `retry-after-ms`. HTTP dates are
/// not understood and give `None` (the computed backoff applies).
pub fn parse_retry_after(seconds: Option<&str>, millis: Option<&str>) -> Option<Duration> {
    let cap = 3600.0;
    if let Some(ms) = millis.and_then(|m| m.trim().parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64((ms / 1000.0).min(cap)));
    }
    let s = seconds?.trim().parse::<f64>().ok()?;
    (s.is_finite() && s >= 0.0).then(|| Duration::from_secs_f64(s.min(cap)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_its_rate_and_caps_at_one_second() {
        let t0 = Instant::now();
        let mut b = Bucket::per_minute(122.0, t0); // 2 per second, capacity 2
        assert_eq!(b.capacity(), 2.0);
        assert_eq!(b.wait(1.0, t0), Duration::ZERO);
        b.take(1.0);
        b.take(1.0);
        let w = b.wait(1.0, t0);
        assert!((w.as_secs_f64() - 0.5).abs() < 1e-9, "{w:?}");
        // After a long idle time the level is capped at the capacity.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(b.wait(2.0, later), Duration::ZERO);
        b.take(2.0);
        assert!(b.wait(1.0, later) > Duration::ZERO);
    }

    #[test]
    fn bucket_goes_into_debt_and_recovers() {
        let t0 = Instant::now();
        let mut b = Bucket::per_minute(6100.0, t0); // 100 tokens/s, capacity 100
        assert_eq!(b.wait(500.0, t0), Duration::ZERO); // a big request waits for a full bucket only
        b.take(500.0); // level -400
        let w = b.wait(100.0, t0);
        assert!((w.as_secs_f64() - 5.0).abs() < 1e-9, "{w:?}");
        b.adjust(300.0); // the server reported 200 tokens, not 500
        let w = b.wait(100.0, t0);
        assert!((w.as_secs_f64() - 2.0).abs() < 1e-9, "{w:?}");
    }

    #[test]
    fn limits_space_requests() {
        let l = Limits::new(Some(1220.0), None); // 20/s, capacity 20
        let cancel = AtomicBool::new(false);
        let t = Instant::now();
        for _ in 0..25 {
            l.acquire(0, &cancel).unwrap();
        }
        // 20 at once, then 5 more at 50 ms intervals.
        assert!(
            t.elapsed() >= Duration::from_millis(240),
            "{:?}",
            t.elapsed()
        );
        cancel.store(true, Relaxed);
        assert_eq!(l.acquire(0, &cancel), Err(Cancelled));
    }

    #[test]
    fn pause_holds_every_request() {
        let l = Limits::new(None, None);
        let cancel = AtomicBool::new(false);
        l.pause_until(Instant::now() + Duration::from_millis(150));
        let t = Instant::now();
        l.acquire(10, &cancel).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(140));
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let base = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        for retry in 0..40 {
            let d = backoff(retry, base, max, None);
            let full = (base * 2u32.saturating_pow(retry.min(20))).min(max);
            assert!(
                d >= full / 2 && d <= full,
                "retry {retry}: {d:?} vs {full:?}"
            );
        }
        assert_eq!(
            backoff(0, base, max, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn retry_after_parsing() {
        assert_eq!(
            parse_retry_after(Some("2"), None),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            parse_retry_after(Some(" 0.5 "), None),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse_retry_after(Some("2"), Some("250")),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT"), None),
            None
        );
        assert_eq!(parse_retry_after(Some("-1"), None), None);
        assert_eq!(parse_retry_after(None, None), None);
    }

    #[test]
    fn random_unit_is_in_range_and_varies() {
        let xs: Vec<f64> = (0..100).map(|_| random_unit()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(xs.iter().any(|x| (x - xs[0]).abs() > 1e-6));
    }
}
