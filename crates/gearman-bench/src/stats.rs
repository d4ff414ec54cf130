//! Latency histograms and their summaries.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest recordable latency: one hour, in nanoseconds.
const MAX_NANOS: u64 = 3_600_000_000_000;

/// A latency histogram in nanoseconds with 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, MAX_NANOS, 3).unwrap_or_else(|_| unreachable!())
}

/// Records one latency sample.
pub(crate) fn record(h: &mut Histogram<u64>, d: Duration) {
    let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
    h.saturating_record(nanos);
}

/// Percentiles of a histogram, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Summary {
    /// Number of samples.
    pub(crate) count: u64,
    /// Median.
    pub(crate) p50: f64,
    /// 90th percentile.
    pub(crate) p90: f64,
    /// 99th percentile.
    pub(crate) p99: f64,
    /// Largest sample.
    pub(crate) max: f64,
    /// Mean.
    pub(crate) mean: f64,
}

impl Summary {
    /// Summarises `h`; `None` when it holds no samples.
    pub(crate) fn of(h: &Histogram<u64>) -> Option<Summary> {
        if h.is_empty() {
            return None;
        }
        let us = |nanos: u64| nanos as f64 / 1000.0;
        Some(Summary {
            count: h.len(),
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            max: us(h.max()),
            mean: h.mean() / 1000.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= b * 0.002
    }

    #[test]
    fn percentiles_of_a_uniform_sample() {
        let mut h = new_histogram();
        // 1..=1000 microseconds, shuffled order does not matter to a histogram.
        for i in (1..=1000u64).rev() {
            record(&mut h, Duration::from_micros(i));
        }
        let s = Summary::of(&h).expect("samples were recorded");
        assert_eq!(s.count, 1000);
        assert!(close(s.p50, 500.0), "p50 {}", s.p50);
        assert!(close(s.p90, 900.0), "p90 {}", s.p90);
        assert!(close(s.p99, 990.0), "p99 {}", s.p99);
        assert!(close(s.max, 1000.0), "max {}", s.max);
        assert!(close(s.mean, 500.5), "mean {}", s.mean);
    }

    #[test]
    fn merged_histograms_and_empty_ones() {
        assert_eq!(Summary::of(&new_histogram()), None);
        let mut a = new_histogram();
        let mut b = new_histogram();
        for _ in 0..99 {
            record(&mut a, Duration::from_micros(10));
        }
        record(&mut b, Duration::from_millis(5));
        a.add(&b).expect("same bounds");
        let s = Summary::of(&a).expect("samples were recorded");
        assert_eq!(s.count, 100);
        assert!(close(s.p99, 10.0), "p99 {}", s.p99);
        assert!(close(s.max, 5000.0), "max {}", s.max);
        // Zero durations are clamped to the lowest bucket rather than dropped.
        record(&mut a, Duration::ZERO);
        assert_eq!(a.len(), 101);
    }
}
