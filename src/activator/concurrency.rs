//! The time-weighted concurrency average behind what the activator reports on `GET /stats`
//! ([`crate::api::stats`]).

use std::time::Instant;

/// Time-weighted average of a count that goes up and down (requests in the activator), over
/// windows that end at each [`take_average`](Self::take_average).
#[derive(Clone, Debug)]
pub struct ConcurrencyMeter {
    current: u32,
    /// Integral of `current` over time since `window_start`, in request-seconds.
    area: f64,
    last_change: Instant,
    window_start: Instant,
}

impl ConcurrencyMeter {
    pub fn new(now: Instant) -> Self {
        Self {
            current: 0,
            area: 0.0,
            last_change: now,
            window_start: now,
        }
    }

    /// The count now.
    pub fn current(&self) -> u32 {
        self.current
    }

    pub fn increment(&mut self, now: Instant) {
        self.advance(now);
        self.current += 1;
    }

    pub fn decrement(&mut self, now: Instant) {
        self.advance(now);
        self.current = self.current.saturating_sub(1);
    }

    /// The average since the previous call (or since creation), and starts a new window. A
    /// window of no length reports the count now.
    pub fn take_average(&mut self, now: Instant) -> f64 {
        self.advance(now);
        let window = now
            .saturating_duration_since(self.window_start)
            .as_secs_f64();
        let average = if window > 0.0 {
            self.area / window
        } else {
            f64::from(self.current)
        };
        self.area = 0.0;
        self.window_start = now.max(self.window_start);
        average
    }

    fn advance(&mut self, now: Instant) {
        let elapsed = now
            .saturating_duration_since(self.last_change)
            .as_secs_f64();
        self.area += elapsed * f64::from(self.current);
        self.last_change = now.max(self.last_change);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn concurrency_is_the_time_weighted_average_since_the_previous_scrape() {
        let t0 = Instant::now();
        let mut meter = ConcurrencyMeter::new(t0);
        // 0 for 500ms, 2 for 250ms, 1 for 250ms: (0*0.5 + 2*0.25 + 1*0.25) / 1s = 0.75.
        meter.increment(t0 + ms(500));
        meter.increment(t0 + ms(500));
        meter.decrement(t0 + ms(750));
        let average = meter.take_average(t0 + ms(1000));
        assert!((average - 0.75).abs() < 1e-9, "{average}");
        assert_eq!(meter.current(), 1);
    }

    #[test]
    fn each_scrape_starts_a_new_window() {
        let t0 = Instant::now();
        let mut meter = ConcurrencyMeter::new(t0);
        meter.increment(t0);
        meter.increment(t0);
        meter.take_average(t0 + ms(1000));
        meter.decrement(t0 + ms(1500));
        // 2 for 500ms then 1 for 500ms.
        let average = meter.take_average(t0 + ms(2000));
        assert!((average - 1.5).abs() < 1e-9, "{average}");
    }

    #[test]
    fn a_scrape_right_after_another_reports_the_count_now() {
        let t0 = Instant::now();
        let mut meter = ConcurrencyMeter::new(t0);
        meter.increment(t0);
        meter.increment(t0);
        meter.increment(t0);
        assert_eq!(meter.take_average(t0), 3.0);
    }

    #[test]
    fn an_idle_function_averages_zero() {
        let t0 = Instant::now();
        let mut meter = ConcurrencyMeter::new(t0);
        assert_eq!(meter.take_average(t0 + ms(1000)), 0.0);
    }
}
