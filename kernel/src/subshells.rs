//! Kernel subshells (JEP 91): more shells in one kernel, each with its own
//! thread and queue, so that one answers while another runs a long cell (for
//! pmp: `%pmp status` or `%pmp cancel` while a cell waits on `.result()`).
//!
//! The control channel creates, lists and deletes them; the shell reader
//! hands a request whose header names a subshell to that subshell's queue.
//! This module keeps the table and knows nothing of Python: a `Launch`
//! (`python::subshell`) starts the thread that serves a queue. As in
//! ipykernel, every subshell runs its cells in the one IPython shell (same
//! namespace, same execution count); interrupts reach the main shell only.

use crate::iopub::Iopub;
use crate::shell::{Queue, Replies, Work, WorkReceiver};
use crate::wire::{json, Request};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// Starts the thread that serves one subshell's requests from `work`;
/// `queue` feeds that same channel (the thread queues markers for itself).
pub trait Launch: Send + Sync {
    fn launch(&self, id: &str, work: WorkReceiver, queue: Queue) -> Result<(), String>;
}

pub struct Subshells {
    /// Live subshells in creation order (a handful at most: a list is enough).
    queues: Mutex<Vec<(String, Queue)>>,
    /// Set once the Python side can run subshells.
    launcher: watch::Sender<Option<Arc<dyn Launch>>>,
}

#[derive(Deserialize)]
struct DeleteRequest {
    subshell_id: String,
}

#[derive(Serialize)]
struct Created {
    status: &'static str,
    subshell_id: String,
}

#[derive(Serialize)]
struct Listed {
    status: &'static str,
    subshell_id: Vec<String>,
}

const ENAME: &str = "SubshellError";

fn error(evalue: String) -> Bytes {
    crate::control::error_reply(ENAME, evalue)
}

fn unknown(id: &str) -> String {
    format!(
        "no subshell {id:?} in this kernel (deleted, or never created): \
         list_subshell_request lists the live ones, create_subshell_request makes one"
    )
}

impl Default for Subshells {
    fn default() -> Self {
        Subshells {
            queues: Mutex::new(Vec::new()),
            launcher: watch::channel(None).0,
        }
    }
}

impl Subshells {
    /// Called once the Python side is up; creation waits for it until then.
    pub fn set_launcher(&self, launcher: Arc<dyn Launch>) {
        self.launcher.send_replace(Some(launcher));
    }

    fn queues(&self) -> MutexGuard<'_, Vec<(String, Queue)>> {
        // Only ids and senders are behind the lock: keep going after a panic.
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The reply content to a subshell request on the control channel, or
    /// `None` if `request` is not one.
    pub async fn answer(&self, request: &Request) -> Option<Bytes> {
        Some(match request.msg_type.as_str() {
            "create_subshell_request" => self.create().await,
            "delete_subshell_request" => self.delete(request),
            "list_subshell_request" => json(&Listed {
                status: "ok",
                subshell_id: self.queues().iter().map(|(id, _)| id.clone()).collect(),
            }),
            _ => return None,
        })
    }

    async fn create(&self) -> Bytes {
        let mut ready = self.launcher.subscribe();
        let launcher = match ready.wait_for(Option::is_some).await {
            Ok(launcher) => launcher.clone().expect("waited for Some"),
            // The sender lives as long as self.
            Err(_) => unreachable!("subshell launcher sender dropped"),
        };
        let id = uuid::Uuid::new_v4().to_string();
        let (queue, work) = std::sync::mpsc::channel();
        if let Err(why) = launcher.launch(&id, work, queue.clone()) {
            return error(format!("cannot start a subshell: {why}"));
        }
        self.queues().push((id.clone(), queue));
        json(&Created {
            status: "ok",
            subshell_id: id,
        })
    }

    fn delete(&self, request: &Request) -> Bytes {
        let Some(DeleteRequest { subshell_id: id }) = request.content_as() else {
            return error(
                "a delete_subshell_request needs the content {\"subshell_id\": ID}, with \
                 the ID a create_subshell_reply gave"
                    .into(),
            );
        };
        let mut queues = self.queues();
        let Some(at) = queues.iter().position(|(live, _)| *live == id) else {
            return error(unknown(&id));
        };
        let (_, queue) = queues.remove(at);
        // Requests already queued are answered first; then the thread ends.
        let _ = queue.send(Work::Leave);
        json(&serde_json::json!({"status": "ok"}))
    }

    /// Queue `request` for the subshell its header names (an unknown one is
    /// answered with an error naming it); gives back a request for the main
    /// shell.
    pub fn route(&self, request: Request, replies: &Replies, iopub: &Iopub) -> Option<Request> {
        let Some(id) = &request.subshell_id else {
            return Some(request);
        };
        let sent = match self.queues().iter().find(|(live, _)| live == id) {
            Some((_, queue)) => queue.send(Work::Request(request)).map_err(|e| e.0),
            None => Err(Work::Request(request)),
        };
        if let Err(Work::Request(request)) = sent {
            let id = request.subshell_id.as_deref().unwrap_or_default();
            log::warn!(
                "{} for subshell {id:?}, which does not exist",
                request.msg_type
            );
            iopub.status("busy", Some(&request.header));
            replies.send(request.reply(error(unknown(id))));
            iopub.status("idle", Some(&request.header));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::TryRecvError;

    /// Keeps each launched subshell's channel for the test to read.
    #[derive(Default)]
    struct Threads(Mutex<Vec<(String, WorkReceiver)>>);

    impl Launch for Threads {
        fn launch(&self, id: &str, work: WorkReceiver, _queue: Queue) -> Result<(), String> {
            self.0.lock().unwrap().push((id.to_string(), work));
            Ok(())
        }
    }

    fn request(msg_type: &str, subshell_id: Option<&str>, content: &str) -> Request {
        Request {
            identities: Vec::new(),
            header: Bytes::from_static(b"{}"),
            msg_type: msg_type.into(),
            subshell_id: subshell_id.map(str::to_string),
            metadata: Bytes::from_static(b"{}"),
            content: Bytes::from(content.to_string()),
            buffers: Vec::new(),
        }
    }

    fn answer(subshells: &Subshells, request: Request) -> serde_json::Value {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let content = runtime.block_on(subshells.answer(&request)).unwrap();
        serde_json::from_slice(&content).unwrap()
    }

    #[test]
    fn a_created_subshell_is_listed_gets_its_requests_and_leaves_when_deleted() {
        let subshells = Subshells::default();
        let threads = Arc::new(Threads::default());
        subshells.set_launcher(threads.clone());

        let created = answer(&subshells, request("create_subshell_request", None, "{}"));
        assert_eq!(created["status"], "ok");
        let id = created["subshell_id"].as_str().unwrap().to_string();
        let listed = answer(&subshells, request("list_subshell_request", None, "{}"));
        assert_eq!(listed["subshell_id"], serde_json::json!([id]));

        let (replies, _replies_rx) = Replies::channel();
        let (iopub, _iopub_rx) = Iopub::channel();
        let main = request("execute_request", None, "{}");
        assert!(subshells.route(main, &replies, &iopub).is_some());
        let sub = request("execute_request", Some(&id), "{}");
        assert!(subshells.route(sub, &replies, &iopub).is_none());
        let (launched, work) = threads.0.lock().unwrap().pop().unwrap();
        assert_eq!(launched, id);
        assert!(
            matches!(work.try_recv(), Ok(Work::Request(r)) if r.subshell_id == Some(id.clone()))
        );

        let delete = format!(r#"{{"subshell_id":"{id}"}}"#);
        let deleted = answer(
            &subshells,
            request("delete_subshell_request", None, &delete),
        );
        assert_eq!(deleted["status"], "ok");
        assert!(matches!(work.try_recv(), Ok(Work::Leave)));
        assert!(matches!(work.try_recv(), Err(TryRecvError::Disconnected)));
        let listed = answer(&subshells, request("list_subshell_request", None, "{}"));
        assert_eq!(listed["subshell_id"], serde_json::json!([]));
    }

    #[test]
    fn deleting_an_unknown_subshell_is_an_error_naming_it() {
        let subshells = Subshells::default();
        let reply = answer(
            &subshells,
            request("delete_subshell_request", None, r#"{"subshell_id":"nope"}"#),
        );
        assert_eq!(reply["status"], "error");
        assert!(
            reply["evalue"].as_str().unwrap().contains("\"nope\""),
            "{reply}"
        );
        let reply = answer(&subshells, request("delete_subshell_request", None, "{}"));
        assert!(
            reply["evalue"].as_str().unwrap().contains("subshell_id"),
            "{reply}"
        );
    }

    #[test]
    fn other_requests_are_not_subshell_requests() {
        let subshells = Subshells::default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let request = request("kernel_info_request", None, "{}");
        assert!(runtime.block_on(subshells.answer(&request)).is_none());
    }
}
