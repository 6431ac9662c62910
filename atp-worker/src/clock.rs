//! Time, as the relay sees it: milliseconds since the Unix epoch from a function (JavaScript's
//! `Date.now()` in Workers, the system clock or a hand-moved clock in native tests).

use std::cell::Cell;
use std::rc::Rc;

/// A shared clock.
#[derive(Clone)]
pub struct Clock(Rc<dyn Fn() -> i64>);

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.now_ms())
    }
}

impl Clock {
    /// A clock reading `f` (milliseconds since the epoch).
    pub fn new(f: impl Fn() -> i64 + 'static) -> Self {
        Clock(Rc::new(f))
    }

    /// A clock that shows whatever `t` holds (tests).
    pub fn manual(t: Rc<Cell<i64>>) -> Self {
        Clock::new(move || t.get())
    }

    /// The host's wall clock.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn system() -> Self {
        Clock::new(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0)
        })
    }

    /// Milliseconds since the epoch.
    pub fn now_ms(&self) -> i64 {
        (self.0)()
    }

    /// Seconds since the epoch.
    pub fn now(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }
}

impl atp_wasm::env::Clock for Clock {
    fn now(&self) -> i64 {
        Clock::now(self)
    }
}

/// A random `u32` (the JS crypto source in Workers).
pub fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = getrandom::getrandom(&mut b);
    u32::from_le_bytes(b)
}

/// A random number in `[0, 1)`, for backoff jitter.
pub fn jitter() -> f64 {
    random_u32() as f64 / (u32::MAX as f64 + 1.0)
}
