//! The two tasks that drive the room table's fan-out on their own schedule: with
//! `fanout_delay_ms`, [`delayed`] decides when published events are written; and
//! [`continue_passes`] continues fan-out passes cut in slices of [`super::table::SLICE`]
//! subscribers. Spawned once each by `main`; the writing itself is [`RoomTable`]'s (through
//! [`super::fanout`]). The table knows nothing of these tasks but the wakers they register.

use std::time::Duration;

use super::table::RoomTable;

/// With `fanout_delay_ms`: writes published events to subscribers `delay` after the first of
/// them, so the events of that window share one write per subscriber. One task for all rooms.
pub async fn delayed(table: &RoomTable, delay: Duration) {
    table.set_delayed(true);
    loop {
        std::future::poll_fn(|cx| table.poll_dirty(cx.waker())).await;
        async_io::Timer::after(delay).await;
        table.flush_dirty();
    }
}

/// Continues fan-out passes that stopped after a [`super::table::SLICE`] of subscribers,
/// one slice per room at a time with a yield in between, so that accepting connections, the
/// component link and other rooms keep moving while a room with thousands of subscribers is
/// written to. One task for all rooms; while it runs, passes are sliced.
pub async fn continue_passes(table: &RoomTable) {
    loop {
        std::future::poll_fn(|cx| table.poll_unfinished(cx.waker())).await;
        table.flush_unfinished();
        futures_lite::future::yield_now().await;
    }
}
