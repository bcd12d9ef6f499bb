//! The client's events, held until the event loop's turn ends and then sent
//! together. The client's thread sleeps on its channel whenever it has
//! caught up, which it does after every event at thousands of calls a
//! second: an event sent at once woke it each time, a futex call for the
//! scheduler's thread and a context switch for both (at 1,000 nodes × 128
//! simulated workers, a sixth of the scheduler's CPU). A turn's events sent
//! back to back wake it about once. None waits longer than the turn that
//! made it: the loop flushes before it waits again.

use crate::core::Event;
use std::sync::mpsc::Sender;

pub(super) struct EventsOut {
    client: Sender<Event>,
    held: Vec<Event>,
}

impl EventsOut {
    pub(super) fn new(client: Sender<Event>) -> EventsOut {
        EventsOut {
            client,
            held: Vec::new(),
        }
    }

    /// Hold `event` for the client until `flush`.
    pub(super) fn push(&mut self, event: Event) {
        self.held.push(event);
    }

    /// Send what is held, in the order it was made.
    pub(super) fn flush(&mut self) {
        for event in self.held.drain(..) {
            // A client that dropped its receiver wants no more.
            let _ = self.client.send(event);
        }
    }
}
