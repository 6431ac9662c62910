//! A cap on the `fetch` calls of one invocation. Workers allow 50 subrequests per invocation on
//! the free plan (more on paid plans); DoH lookups and transfers share the budget. A request over
//! the budget fails before it is sent, and the delivery code treats that as "stop for now" rather
//! than as a failure of the destination (no backoff, no attempt counted).

use std::cell::Cell;
use std::rc::Rc;

use atp_wasm::http::{HttpError, HttpRequest, HttpResponse, HttpTransport};

/// The text of the error a request over the budget gets.
pub const EXHAUSTED: &str = "subrequest budget of this invocation exhausted";

/// Remaining subrequests, shared by every transport of one invocation.
#[derive(Debug, Clone)]
pub struct Budget(Rc<Cell<u32>>);

impl Budget {
    pub fn new(n: u32) -> Self {
        Budget(Rc::new(Cell::new(n)))
    }

    pub fn remaining(&self) -> u32 {
        self.0.get()
    }

    /// Takes one; `false` when none is left.
    pub fn take(&self) -> bool {
        match self.0.get() {
            0 => false,
            n => {
                self.0.set(n - 1);
                true
            }
        }
    }
}

/// A transport that spends one unit of a [`Budget`] per request.
#[derive(Debug, Clone)]
pub struct Budgeted<T> {
    inner: T,
    budget: Budget,
}

impl<T> Budgeted<T> {
    pub fn new(inner: T, budget: Budget) -> Self {
        Budgeted { inner, budget }
    }

    pub fn budget(&self) -> &Budget {
        &self.budget
    }
}

impl<T: HttpTransport> HttpTransport for Budgeted<T> {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        if !self.budget.take() {
            return Err(HttpError(EXHAUSTED.into()));
        }
        self.inner.send(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_runs_out() {
        let b = Budget::new(2);
        let c = b.clone();
        assert!(b.take() && c.take());
        assert!(!b.take());
        assert_eq!(c.remaining(), 0);
    }
}
