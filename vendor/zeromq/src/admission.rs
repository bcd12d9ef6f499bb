//! pmp: admission of the peers a bound socket accepts, for an application
//! that authenticates a peer by its first message (pmp's scheduler: a signed
//! Hello). Anyone who can reach the port can connect, so until the
//! application admits a peer:
//!
//! - it may send one message, and at most `first_message_max` bytes in all
//!   (the handshake's commands included): a frame header claiming more closes
//!   the connection before anything is reserved for it;
//! - nothing more is read from it until the application admits or refuses it;
//! - it is disconnected if it is not admitted within `timeout` of being
//!   accepted (a peer that connects and says nothing holds a descriptor);
//! - at most `max_waiting` such peers are kept: the oldest one goes to make
//!   room, so that a flood of idle connections cannot keep out a peer that
//!   authenticates right after it connects.

use crate::async_rt;

use futures::task::AtomicWaker;
use parking_lot::Mutex;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub(crate) struct AdmissionOptions {
    pub(crate) first_message_max: usize,
    pub(crate) timeout: Duration,
    pub(crate) max_waiting: usize,
}

/// Where one accepted connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Handshake and first message, within the byte budget.
    Reading,
    /// The first message was delivered; nothing more is read until a verdict.
    Held,
    /// The application admitted the peer: no limits from here on.
    Admitted,
    /// Refused, timed out or displaced: the reader ends the stream.
    Closed,
}

impl Stage {
    fn from_u8(stage: u8) -> Stage {
        match stage {
            0 => Stage::Reading,
            1 => Stage::Held,
            2 => Stage::Admitted,
            _ => Stage::Closed,
        }
    }
}

const WAITING: &[Stage] = &[Stage::Reading, Stage::Held];

/// Shared by a connection's reader (which obeys it) and whoever decides
/// (the application through the socket, the timer, a newer connection).
pub(crate) struct Gate {
    stage: AtomicU8,
    /// The task that last polled the reader while it waited: a verdict wakes
    /// it, so that a held reader reads on or ends.
    waker: AtomicWaker,
    pub(crate) first_message_max: usize,
}

impl Gate {
    fn new(first_message_max: usize) -> Gate {
        Gate {
            stage: AtomicU8::new(Stage::Reading as u8),
            waker: AtomicWaker::new(),
            first_message_max,
        }
    }

    pub(crate) fn stage(&self) -> Stage {
        Stage::from_u8(self.stage.load(Ordering::Acquire))
    }

    pub(crate) fn register(&self, waker: &Waker) {
        self.waker.register(waker);
    }

    /// The first message was delivered: read nothing more for now.
    pub(crate) fn hold(&self) {
        self.advance(&[Stage::Reading], Stage::Held);
    }

    /// False if the connection was closed before the verdict came.
    pub(crate) fn admit(&self) -> bool {
        self.advance(WAITING, Stage::Admitted) || self.stage() == Stage::Admitted
    }

    /// Close the connection whatever its stage (the application refused it).
    pub(crate) fn close(&self) {
        self.advance(&[Stage::Reading, Stage::Held, Stage::Admitted], Stage::Closed);
    }

    /// Close the connection unless it was admitted meanwhile.
    fn close_waiting(&self) {
        self.advance(WAITING, Stage::Closed);
    }

    fn waiting(&self) -> bool {
        WAITING.contains(&self.stage())
    }

    fn advance(&self, from: &[Stage], to: Stage) -> bool {
        let mut current = self.stage.load(Ordering::Acquire);
        loop {
            if !from.contains(&Stage::from_u8(current)) {
                return false;
            }
            match self.stage.compare_exchange(
                current,
                to as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        if to != Stage::Held {
            self.waker.wake();
        }
        true
    }
}

/// The gates of a socket's accepted connections that wait for a verdict.
pub struct Admission {
    options: AdmissionOptions,
    waiting: Mutex<VecDeque<Arc<Gate>>>,
}

impl Admission {
    pub(crate) fn new(options: AdmissionOptions) -> Admission {
        Admission {
            options,
            waiting: Mutex::new(VecDeque::new()),
        }
    }

    /// The gate of a connection just accepted, which starts its timer and
    /// displaces the oldest waiting connection if there are too many.
    pub(crate) fn accept(&self) -> Arc<Gate> {
        let gate = Arc::new(Gate::new(self.options.first_message_max));
        {
            let mut waiting = self.waiting.lock();
            // A gate held by nothing else belongs to a connection already
            // gone (the peer hung up): it no longer takes a place.
            waiting.retain(|gate| gate.waiting() && Arc::strong_count(gate) > 1);
            while waiting.len() >= self.options.max_waiting {
                match waiting.pop_front() {
                    Some(oldest) => oldest.close_waiting(),
                    None => break,
                }
            }
            waiting.push_back(gate.clone());
        }
        let timed = Arc::downgrade(&gate);
        let timeout = self.options.timeout;
        async_rt::task::spawn(async move {
            async_rt::task::sleep(timeout).await;
            if let Some(gate) = timed.upgrade() {
                gate.close_waiting();
            }
        });
        gate
    }
}
