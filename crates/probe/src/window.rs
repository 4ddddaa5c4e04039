//! The sliding window of latencies and errors: a ring of HdrHistogram
//! sub-windows ("slots") that are rotated, never rebuilt.
//!
//! The window is cut into `slots` equal slices of time. A sample lands in the
//! slot of its time slice; when time moves into a slice whose slot still
//! holds data from a lap ago, that slot is cleared in place (its counts
//! array is kept) and reused. A summary merges the live slots into one
//! scratch histogram, so percentiles are those of every sample in the last
//! `window` (to within one slot: the oldest slice falls out whole).
//!
//! Pure: no clock, no lock, no I/O. The caller passes the time in, which is
//! what makes rotation testable in microseconds.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Latencies are kept in microseconds, with 3 significant figures (0.1 %
/// precision): enough to tell a 150 µs loopback health check from a 2 s LLM
/// reply, and well inside the 2 % the percentiles are held to.
const SIGFIG: u8 = 3;
/// Latencies above this are recorded as this: far beyond any SLA, and a
/// bound keeps each slot's counts array small (≈ 70 KiB).
pub const MAX_LATENCY: Duration = Duration::from_secs(60);
const MAX_MICROS: u64 = 60_000_000;

/// Percentiles, error rate and sample count over the window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    pub samples: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

impl Summary {
    /// Errors over samples; 0 without samples (nothing is known to fail).
    pub fn error_rate(&self) -> f64 {
        if self.samples == 0 {
            0.0
        } else {
            self.errors as f64 / self.samples as f64
        }
    }
}

struct Slot {
    /// The time slice this slot holds: `(t - origin) / slot_len`.
    epoch: u64,
    latencies: Histogram<u32>,
    samples: u64,
    errors: u64,
}

impl Slot {
    fn clear(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.latencies.reset();
        self.samples = 0;
        self.errors = 0;
    }
}

/// A sliding window over `slots` HdrHistogram sub-windows.
pub struct Window {
    origin: Instant,
    slot_len: Duration,
    slots: Vec<Slot>,
    /// The slot being written and the time slice it covers: the fast path of
    /// `record` is two `Instant` comparisons.
    current: usize,
    current_start: Instant,
    current_end: Instant,
    merged: Histogram<u32>,
}

impl Window {
    /// A window of length `window` cut into `slots` slices, starting at
    /// `origin`. Both must be above zero (the configuration checks it);
    /// they are raised to 1 slot and 1 ms otherwise.
    pub fn new(window: Duration, slots: u32, origin: Instant) -> Self {
        let slots = slots.max(1);
        let slot_len = (window / slots).max(Duration::from_millis(1));
        let histogram = || {
            Histogram::<u32>::new_with_bounds(1, MAX_MICROS, SIGFIG)
                .expect("constant histogram bounds are valid")
        };
        let ring = (0..slots)
            .map(|i| Slot {
                epoch: u64::from(i),
                latencies: histogram(),
                samples: 0,
                errors: 0,
            })
            .collect();
        Self {
            origin,
            slot_len,
            slots: ring,
            current: 0,
            current_start: origin,
            current_end: origin + slot_len,
            merged: histogram(),
        }
    }

    /// The length of time covered: `slots` × slot length.
    pub fn span(&self) -> Duration {
        self.slot_len * self.slots.len() as u32
    }

    /// Records one sample taken at `now`. Samples older than the window are
    /// ignored.
    #[inline]
    pub fn record(&mut self, now: Instant, latency: Duration, ok: bool) {
        let outside = now < self.current_start || now >= self.current_end;
        if outside && !self.rotate_to(now) {
            return;
        }
        let micros = latency
            .as_secs()
            .saturating_mul(1_000_000)
            .saturating_add(u64::from(latency.subsec_micros()))
            .min(MAX_MICROS);
        let slot = &mut self.slots[self.current];
        slot.latencies.saturating_record(micros);
        slot.samples += 1;
        slot.errors += u64::from(!ok);
    }

    /// Points `current` at the slot of `now`, clearing it if it holds an
    /// older lap. False when `now` is older than what the slot holds.
    fn rotate_to(&mut self, now: Instant) -> bool {
        let epoch = self.epoch(now);
        let ix = (epoch % self.slots.len() as u64) as usize;
        let slot = &mut self.slots[ix];
        if slot.epoch > epoch {
            return false;
        }
        if slot.epoch < epoch {
            slot.clear(epoch);
        }
        self.current = ix;
        let offset = self.slot_len.as_nanos().saturating_mul(u128::from(epoch));
        self.current_start = self.origin + Duration::from_nanos(offset as u64);
        self.current_end = self.current_start + self.slot_len;
        true
    }

    fn epoch(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        (since / self.slot_len.as_nanos()) as u64
    }

    /// Merges the slots still inside the window at `now`.
    pub fn summary(&mut self, now: Instant) -> Summary {
        let newest = self.epoch(now);
        let oldest = newest.saturating_sub(self.slots.len() as u64 - 1);
        self.merged.reset();
        let mut summary = Summary::default();
        for slot in &self.slots {
            if slot.samples == 0 || slot.epoch < oldest || slot.epoch > newest {
                continue;
            }
            summary.samples += slot.samples;
            summary.errors += slot.errors;
            // Same bounds and precision everywhere: adding cannot fail.
            let _ = self.merged.add(&slot.latencies);
        }
        if summary.samples > 0 {
            let ms = |q: f64| self.merged.value_at_quantile(q) as f64 / 1000.0;
            summary.p50_ms = ms(0.50);
            summary.p95_ms = ms(0.95);
            summary.p99_ms = ms(0.99);
        }
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic latencies with a long right tail (a product of uniforms,
    /// roughly lognormal), from a fixed-seed xorshift generator.
    fn latencies(n: usize) -> Vec<Duration> {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut uniform = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let x = 1.0 + 4.0 * uniform() * uniform() * uniform();
                Duration::from_micros((50_000.0 * x * x * x) as u64)
            })
            .collect()
    }

    fn exact_quantile(sorted: &[Duration], q: f64) -> f64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
        sorted[rank - 1].as_secs_f64() * 1000.0
    }

    #[test]
    fn percentiles_are_within_2_percent_and_the_error_rate_is_exact() {
        let origin = Instant::now();
        let mut window = Window::new(Duration::from_secs(60), 20, origin);
        let samples = latencies(10_000);
        let mut errors = 0;
        for (i, latency) in samples.iter().enumerate() {
            // Spread over 50 s, inside one window; every 7th fails.
            let at = origin + Duration::from_millis(i as u64 * 5);
            let ok = i % 7 != 0;
            errors += u64::from(!ok);
            window.record(at, *latency, ok);
        }
        let summary = window.summary(origin + Duration::from_secs(50));
        let mut sorted = samples.clone();
        sorted.sort();
        for (q, got) in [
            (0.50, summary.p50_ms),
            (0.95, summary.p95_ms),
            (0.99, summary.p99_ms),
        ] {
            let exact = exact_quantile(&sorted, q);
            let off = (got - exact).abs() / exact;
            assert!(off <= 0.02, "p{q}: {got} ms vs exact {exact} ms ({off})");
        }
        assert_eq!(summary.samples, 10_000);
        assert_eq!(summary.errors, errors);
        assert_eq!(summary.error_rate(), 1429.0 / 10_000.0);
    }

    #[test]
    fn old_slots_fall_out_of_the_window_and_are_reused() {
        let origin = Instant::now();
        let at = |ms: u64| origin + Duration::from_millis(ms);
        // 10 s in 10 slots of 1 s.
        let mut window = Window::new(Duration::from_secs(10), 10, origin);
        for i in 0..100 {
            window.record(at(i * 10), Duration::from_millis(900), false);
        }
        assert_eq!(window.summary(at(5_000)).samples, 100);
        assert_eq!(window.summary(at(9_999)).samples, 100);

        // Second 10 reuses the slot of second 0: the slow failures are gone.
        for i in 0..50 {
            window.record(at(10_000 + i * 10), Duration::from_millis(100), true);
        }
        let summary = window.summary(at(10_500));
        assert_eq!((summary.samples, summary.errors), (50, 0));
        assert!((summary.p99_ms - 100.0).abs() < 0.1, "{summary:?}");

        // Far later everything has expired, without a write.
        assert_eq!(window.summary(at(60_000)), Summary::default());
        assert_eq!(window.summary(at(60_000)).error_rate(), 0.0);
    }

    #[test]
    fn a_sample_older_than_its_slot_is_ignored() {
        let origin = Instant::now();
        let at = |ms: u64| origin + Duration::from_millis(ms);
        let mut window = Window::new(Duration::from_secs(2), 2, origin);
        window.record(at(2_500), Duration::from_millis(5), true);
        // Second 0 shares the slot of second 2, which is newer.
        window.record(at(500), Duration::from_millis(5), false);
        let summary = window.summary(at(2_600));
        assert_eq!((summary.samples, summary.errors), (1, 0));
        // A late sample for a slot still in the window counts.
        window.record(at(1_500), Duration::from_millis(5), false);
        let summary = window.summary(at(2_600));
        assert_eq!((summary.samples, summary.errors), (2, 1));
    }

    #[test]
    fn slots_keep_rotating_after_months_of_uptime() {
        let origin = Instant::now();
        // 1 ms slots: 60 days is more slices than a u32 counts.
        let mut window = Window::new(Duration::from_millis(10), 10, origin);
        let later = origin + Duration::from_secs(60 * 86_400);
        window.record(later, Duration::from_millis(5), true);
        window.record(
            later + Duration::from_micros(500),
            Duration::from_millis(5),
            false,
        );
        window.record(
            later + Duration::from_millis(3),
            Duration::from_millis(5),
            true,
        );
        let summary = window.summary(later + Duration::from_millis(3));
        assert_eq!((summary.samples, summary.errors), (3, 1));
        let summary = window.summary(later + Duration::from_millis(12));
        assert_eq!((summary.samples, summary.errors), (1, 0));
    }

    #[test]
    fn huge_latencies_are_clamped_not_lost() {
        let origin = Instant::now();
        let mut window = Window::new(Duration::from_secs(60), 6, origin);
        window.record(origin, Duration::from_secs(3600), false);
        let summary = window.summary(origin);
        assert_eq!(summary.samples, 1);
        let max_ms = MAX_LATENCY.as_secs_f64() * 1000.0;
        assert!(
            (summary.p99_ms - max_ms).abs() / max_ms < 0.001,
            "{summary:?}"
        );
    }
}
