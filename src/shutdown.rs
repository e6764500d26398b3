//! The shutdown flag: set once by the signal task, awaited by the long-running tasks.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};

#[derive(Default)]
pub struct Shutdown {
    requested: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl Shutdown {
    pub fn request(&self) {
        self.requested.set(true);
        for waker in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    pub fn requested(&self) -> bool {
        self.requested.get()
    }

    /// Resolves once shutdown has been requested.
    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.requested.get() {
                return Poll::Ready(());
            }
            let mut waiters = self.waiters.borrow_mut();
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}
