//! Exponential backoff with jitter, validated once at construction.
//!
//! Delay n (n = 1 for the first retry) is drawn uniformly from [d/2, d] with d = min(initial·2^(n-1),
//! max): "equal jitter", so delays grow visibly (tests and operators can see the spacing rise) while
//! many events failing together do not retry in lockstep. An upstream's `Retry-After` raises the delay
//! to at least what it asked for, capped by `max`.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid backoff: initial must be above zero and not above max")]
pub struct InvalidBackoff;

impl Backoff {
    pub fn try_new(initial: Duration, max: Duration) -> Result<Self, InvalidBackoff> {
        if initial.is_zero() || max < initial {
            return Err(InvalidBackoff);
        }
        Ok(Self { initial, max })
    }

    /// The un-jittered ceiling of retry `n` (1-based).
    pub fn ceiling(&self, n: u32) -> Duration {
        let shift = n.saturating_sub(1).min(31);
        self.initial.saturating_mul(1u32 << shift).min(self.max)
    }

    /// The delay before retry `n`, jittered, raised to `retry_after` when given.
    pub fn delay(&self, n: u32, retry_after: Option<Duration>) -> Duration {
        let ceil = self.ceiling(n);
        let half = ceil / 2;
        let jitter = half.mul_f64(rand::random::<f64>());
        let d = half + jitter;
        match retry_after {
            Some(ra) => d.max(ra.min(self.max)),
            None => d,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_and_grows_to_the_cap() {
        assert_eq!(
            Backoff::try_new(Duration::ZERO, Duration::from_secs(1)),
            Err(InvalidBackoff)
        );
        assert_eq!(
            Backoff::try_new(Duration::from_secs(2), Duration::from_secs(1)),
            Err(InvalidBackoff)
        );
        let b = Backoff::try_new(Duration::from_millis(100), Duration::from_secs(1)).unwrap();
        assert_eq!(b.ceiling(1), Duration::from_millis(100));
        assert_eq!(b.ceiling(3), Duration::from_millis(400));
        assert_eq!(b.ceiling(10), Duration::from_secs(1));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(1));
        for n in 1..8 {
            let d = b.delay(n, None);
            assert!(d >= b.ceiling(n) / 2 && d <= b.ceiling(n), "{n}: {d:?}");
        }
        assert_eq!(
            b.delay(1, Some(Duration::from_secs(5))),
            Duration::from_secs(1)
        );
        assert!(b.delay(1, Some(Duration::from_millis(700))) >= Duration::from_millis(700));
    }
}
