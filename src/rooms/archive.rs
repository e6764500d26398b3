//! Filling a resume gap from a room's archive (XEP-0313 MAM): when a client resumes from an
//! id the ring no longer holds and the room keeps an archive, the HTTP side files a [`Fetch`];
//! the XMPP side queries the room for the messages after that id (at most [`MAX_FETCH`]) and
//! hands them back as ready frames.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

/// Messages fetched for one resume, at most.
pub const MAX_FETCH: usize = 100;
/// Fetches waiting or in flight, at most (more resumes get the `gap` event instead).
pub const MAX_PENDING: usize = 16;

/// One archived message, as an event.
pub struct Archived {
    pub id: Box<str>,
    pub event: super::frame::Event,
}

/// What a resume takes from the archive: the messages before the point where the room's ring
/// takes over, oldest first; `short` when that point was not reached (the archive holds more
/// than one fetch brings: some may be missing between these and the ring).
pub struct Resumed {
    pub events: Vec<Archived>,
    pub short: bool,
}

impl Resumed {
    /// The `gap` that follows a short resume from `id`, for a stream of one room (`room`:
    /// `None`) or of several.
    pub fn gap_json(id: &str, room: Option<&str>) -> Vec<u8> {
        super::frame::Json::new()
            .opt("room", room)
            .str("lastEventId", id)
            .str(
                "reason",
                "the archive holds more messages than one resume fetches; some may be missing",
            )
            .finish()
    }
}

/// What a fetch found: the messages after the id, oldest first, and whether that was all.
pub struct Found {
    pub messages: Vec<Archived>,
    pub complete: bool,
}

pub struct Fetch {
    pub room: usize,
    pub after: String,
    result: RefCell<Option<Result<Found, String>>>,
    waker: RefCell<Option<Waker>>,
}

impl Fetch {
    /// Called by the XMPP side with the outcome.
    pub fn finish(&self, result: Result<Found, String>) {
        *self.result.borrow_mut() = Some(result);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// The queue between the two sides.
#[derive(Default)]
pub struct Archive {
    queue: RefCell<VecDeque<Rc<Fetch>>>,
    in_flight: Cell<usize>,
}

impl Archive {
    /// Asks for the messages of `room` after `after`; waits at most `limit`. `None`: the
    /// queue is full, the room did not answer in time, or the archive refused.
    pub async fn fetch(&self, room: usize, after: &str, limit: Duration) -> Option<Found> {
        if self.queue.borrow().len() + self.in_flight.get() >= MAX_PENDING {
            return None;
        }
        let fetch = Rc::new(Fetch {
            room,
            after: after.to_string(),
            result: RefCell::new(None),
            waker: RefCell::new(None),
        });
        self.queue.borrow_mut().push_back(fetch.clone());
        let done = std::future::poll_fn(|cx| {
            if fetch.result.borrow().is_some() {
                return Poll::Ready(());
            }
            *fetch.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        });
        let finished = futures_lite::future::or(
            async {
                done.await;
                true
            },
            async {
                async_io::Timer::after(limit).await;
                false
            },
        )
        .await;
        // A late answer finds nobody waiting and is dropped with the Rc.
        self.queue.borrow_mut().retain(|f| !Rc::ptr_eq(f, &fetch));
        if !finished {
            return None;
        }
        match fetch.result.borrow_mut().take() {
            Some(Ok(found)) => Some(found),
            Some(Err(why)) => {
                log::debug!("archive fetch after {after} failed: {why}");
                None
            }
            None => None,
        }
    }

    /// The XMPP side takes the next request to send.
    pub fn next_request(&self) -> Option<Rc<Fetch>> {
        let fetch = self.queue.borrow_mut().pop_front()?;
        self.in_flight.set(self.in_flight.get() + 1);
        Some(fetch)
    }

    /// The XMPP side is done with a request it took (answered, failed or abandoned).
    pub fn done(&self) {
        self.in_flight.set(self.in_flight.get().saturating_sub(1));
    }
}
