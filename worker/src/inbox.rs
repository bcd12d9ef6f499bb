//! Verified messages waiting for the main thread, in arrival order. Unlike a
//! channel, a queued `Run` can be taken back out: the scheduler sends a task
//! ahead while another runs, and may then want it back (`ToWorker::Retract`).

use pmp_scheduler::ids::TaskId;
use pmp_scheduler::protocol::ToWorker;
use pmp_scheduler::Bytes;
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};

pub type Message = (ToWorker, Vec<Bytes>);

#[derive(Default)]
pub struct Inbox {
    queue: Mutex<Queue>,
    arrived: Condvar,
}

#[derive(Default)]
struct Queue {
    messages: VecDeque<Message>,
    closed: bool,
    /// The main thread waits in `next`: only then is it woken (a notify is
    /// a system call, and with a task sent ahead the main thread is
    /// usually busy when the next one arrives).
    waiting: bool,
}

impl Inbox {
    pub fn push(&self, message: Message) {
        let mut queue = self.queue.lock().expect("inbox lock");
        queue.messages.push_back(message);
        let waiting = queue.waiting;
        drop(queue);
        if waiting {
            self.arrived.notify_one();
        }
    }

    /// No more messages will come: `next` returns None once the queue is empty.
    pub fn close(&self) {
        self.queue.lock().expect("inbox lock").closed = true;
        self.arrived.notify_one();
    }

    /// The next message, waiting for one; None once closed and drained.
    pub fn next(&self) -> Option<Message> {
        let mut queue = self.queue.lock().expect("inbox lock");
        loop {
            if let Some(message) = queue.messages.pop_front() {
                return Some(message);
            }
            if queue.closed {
                return None;
            }
            queue.waiting = true;
            queue = self.arrived.wait(queue).expect("inbox lock");
            queue.waiting = false;
        }
    }

    /// Take `task`'s Run out of the queue: true if it was still there (the
    /// main thread has not started it, and now never will).
    pub fn take_run(&self, task: TaskId) -> bool {
        let mut queue = self.queue.lock().expect("inbox lock");
        let position = queue.messages.iter().position(
            |(message, _)| matches!(message, ToWorker::Run { task: t, .. } if *t == task),
        );
        position.and_then(|i| queue.messages.remove(i)).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pmp_scheduler::protocol::FunctionRef;

    fn run(task: u64) -> Message {
        let run = ToWorker::Run {
            task: TaskId(task),
            function: FunctionRef::Cached { slot: 0 },
            call_frames: 0,
            dependency_frames: Vec::new(),
            store: None,
            shared: Vec::new(),
            shared_results: false,
        };
        (run, Vec::new())
    }

    fn task_of(message: Option<Message>) -> Option<u64> {
        match message {
            Some((ToWorker::Run { task, .. }, _)) => Some(task.0),
            _ => None,
        }
    }

    #[test]
    fn a_queued_run_is_taken_back_once_and_the_rest_keep_their_order() {
        let inbox = Inbox::default();
        for task in 1..=3 {
            inbox.push(run(task));
        }
        assert!(inbox.take_run(TaskId(2)));
        assert!(!inbox.take_run(TaskId(2)));
        assert_eq!(task_of(inbox.next()), Some(1));
        assert!(
            !inbox.take_run(TaskId(1)),
            "already taken by the main thread"
        );
        inbox.close();
        assert_eq!(task_of(inbox.next()), Some(3));
        assert!(inbox.next().is_none());
    }

    #[test]
    fn next_waits_for_a_message_from_another_thread() {
        let inbox = std::sync::Arc::new(Inbox::default());
        let sender = inbox.clone();
        let thread = std::thread::spawn(move || sender.push(run(7)));
        assert_eq!(task_of(inbox.next()), Some(7));
        thread.join().unwrap();
    }
}
