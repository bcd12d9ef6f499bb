//! The Jupyter debugger: `debug_request` on the control channel answered
//! with `debug_reply`, debugpy's events published as `debug_event`.
//!
//! As in ipykernel, debugpy runs inside the kernel process: its `listen`
//! starts the debug adapter (a separate process) and a pydevd server that
//! traces the Python thread. The kernel connects to the adapter over TCP
//! (`dap`) and forwards the frontend's DAP requests; it answers itself the
//! requests that the Jupyter debugger protocol adds (`dumpCell`,
//! `debugInfo`, `inspectVariables`, `richInspectVariables`,
//! `copyToGlobals`) and a few whose answer it adjusts. Everything here runs
//! on the socket thread, so debug requests are answered while the Python
//! thread is stopped at a breakpoint; what needs Python takes the GIL,
//! which a thread stopped by pydevd does not hold.
//!
//! Nothing of this runs, and nothing is imported in Python, until a
//! frontend sends the first debug request.

mod events;
mod replies;

use crate::dap::Connection;
use crate::iopub::Iopub;
use crate::lifecycle::Lifecycle;
use crate::python::debugging;
use crate::shell::{Queue, Work};
use crate::wire::{json, Request};
use bytes::Bytes;
use events::{forward_events, lock, Shared};
use replies::{failure, is_identifier, response, variables_response, visible};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// How long `debugpy.listen` may take (it starts the adapter process).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `initialize` waits for the Python thread to finish a request.
const BUSY_GRACE: Duration = Duration::from_secs(2);
/// How long the adapter may take to announce `initialized` after attach.
const INITIALIZED_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a disconnect waits for the adapter to close the connection.
const HANG_UP_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to the adapter, from `initialize` to `disconnect`.
struct Session {
    dap: Arc<Connection>,
    /// Set by the forwarder when the adapter sends `initialized`.
    initialized: watch::Receiver<bool>,
    attached: bool,
    /// The event forwarder, which ends when the adapter hangs up.
    forwarder: tokio::task::JoinHandle<()>,
}

pub struct Debugger {
    iopub: Iopub,
    queue: Queue,
    lifecycle: Arc<Lifecycle>,
    /// Whether debugpy can be imported (what kernel_info says).
    available: Option<bool>,
    /// The adapter's port once debugpy listens.
    port: Option<u16>,
    session: Option<Session>,
    /// Breakpoints by source path, as debugpy placed them.
    breakpoints: BTreeMap<String, Value>,
    /// The constant part of debugInfo, from Python.
    cell_files: Option<Value>,
    shared: Arc<Shared>,
}

/// Run a function of the debugger's Python module off the async threads.
async fn python(function: &'static str, args: Vec<String>) -> Result<String, String> {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        debugging::call(function, &args)
    })
    .await
    .map_err(|e| format!("the debugger's Python call {function} failed: {e}"))?
}

async fn python_json(function: &'static str, args: Vec<String>) -> Result<Value, String> {
    let text = python(function, args).await?;
    serde_json::from_str(&text).map_err(|e| format!("{function} returned no JSON: {e}"))
}

impl Debugger {
    pub fn new(iopub: Iopub, queue: Queue, lifecycle: Arc<Lifecycle>) -> Self {
        Debugger {
            iopub,
            queue,
            lifecycle,
            available: None,
            port: None,
            session: None,
            breakpoints: BTreeMap::new(),
            cell_files: None,
            shared: Arc::default(),
        }
    }

    /// The debug_reply content for a debug_request.
    pub async fn handle(&mut self, request: &Request) -> Bytes {
        *lock(&self.shared.parent) = Some(request.header.clone());
        let mut message: Value = serde_json::from_slice(&request.content).unwrap_or(Value::Null);
        if !message["command"].is_string() {
            return json(&json!({
                "type": "response",
                "success": false,
                "message": "a debug_request's content must be a DAP request: \
                            an object with a \"command\" (e.g. \"initialize\")",
            }));
        }
        // The handlers fill in arguments: they must be an object.
        if !message["arguments"].is_object() {
            message["arguments"] = json!({});
        }
        json(&self.process(message).await)
    }

    async fn available(&mut self) -> bool {
        if self.available.is_none() {
            let info: Value =
                serde_json::from_slice(&self.lifecycle.kernel_info().await).unwrap_or_default();
            self.available = Some(info["debugger"] == Value::Bool(true));
        }
        self.available == Some(true)
    }

    async fn process(&mut self, message: Value) -> Value {
        let command = message["command"].as_str().unwrap_or_default().to_string();
        if !self.available().await {
            return failure(
                &message,
                "debugpy is not installed in the kernel's Python environment: \
                 install it there (pip install debugpy) and restart the kernel",
            );
        }
        if command == "initialize" && self.session.is_none() {
            if let Err(e) = self.start().await {
                return failure(&message, &format!("the debugger could not start: {e}"));
            }
        }
        let outcome = match command.as_str() {
            "debugInfo" => self.debug_info(&message).await,
            "inspectVariables" => self.inspect_variables(&message).await,
            "richInspectVariables" => self.rich_inspect_variables(&message).await,
            "modules" => self.modules(&message).await,
            // The user's globals need no session; a stopped frame's do.
            "variables" => self.variables(message.clone()).await,
            _ if self.session.is_none() => Err(format!(
                "the debugger is not started: send \"initialize\" before \"{command}\""
            )),
            "dumpCell" => self.dump_cell(&message).await,
            "setBreakpoints" => self.set_breakpoints(message.clone()).await,
            "source" => Ok(source(&message).await),
            "attach" => self.attach(message.clone()).await,
            "copyToGlobals" => self.copy_to_globals(&message).await,
            // Sent by the kernel itself during attach (see `attach`).
            "configurationDone" => Ok(response(&message, true)),
            "disconnect" => {
                let mut message = message.clone();
                // A frontend's "stop debugging" must not end the kernel.
                message["arguments"]["terminateDebuggee"] = Value::Bool(false);
                self.forward(message).await
            }
            _ => self.forward(message.clone()).await,
        };
        if command == "disconnect" {
            self.stop().await;
        }
        outcome.unwrap_or_else(|e| failure(&message, &e))
    }

    /// Have debugpy listen (on the Python thread, between cells) and connect
    /// to its adapter.
    async fn start(&mut self) -> Result<(), String> {
        // Behind a running cell the start waits only briefly: meanwhile this
        // channel answers nothing else, interrupts included.
        let idle = self.lifecycle.shell_idle() && !self.lifecycle.is_busy();
        let wait = if idle { START_TIMEOUT } else { BUSY_GRACE };
        let (tx, rx) = oneshot::channel();
        let call = Box::new(move || {
            // Not once the request has given up: nothing would undo it.
            if !tx.is_closed() {
                let _ = tx.send(debugging::call("start", &[]));
            }
        });
        self.queue
            .send(Work::Call(call))
            .map_err(|_| "the Python thread has stopped".to_string())?;
        let port = match tokio::time::timeout(wait, rx).await {
            Ok(started) => started.map_err(|_| "the Python thread has stopped".to_string())??,
            Err(_) if idle => {
                return Err(format!(
                    "debugpy did not start listening within {START_TIMEOUT:?}"
                ))
            }
            Err(_) => {
                return Err("a cell is running, and the debugger starts between cells: \
                            enable it again when the cell is done (or interrupt it)"
                    .into())
            }
        };
        let port: u16 = port
            .parse()
            .map_err(|_| format!("debugpy listens on no valid port: {port}"))?;
        self.port = Some(port);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let dap = Connection::connect(port, events_tx)
            .await
            .map_err(|e| format!("cannot connect to debugpy on port {port}: {e}"))?;
        let dap = Arc::new(dap);
        let (initialized_tx, initialized) = watch::channel(false);
        let forwarder = tokio::spawn(forward_events(
            events_rx,
            Arc::clone(&dap),
            Arc::clone(&self.shared),
            self.iopub.clone(),
            initialized_tx,
        ));
        self.session = Some(Session {
            dap,
            initialized,
            attached: false,
            forwarder,
        });
        Ok(())
    }

    async fn stop(&mut self) {
        if let Some(session) = self.session.take() {
            session.dap.close().await;
            // Until the adapter has hung up it may still be ending this
            // session, and would not yet take the next one's attach.
            if tokio::time::timeout(HANG_UP_TIMEOUT, session.forwarder)
                .await
                .is_err()
            {
                log::warn!("debugpy did not hang up within {HANG_UP_TIMEOUT:?} of disconnect");
            }
        }
        self.breakpoints.clear();
        lock(&self.shared.stopped).clear();
        if let Err(e) = python("stop", Vec::new()).await {
            log::warn!("stopping the debugger: {e}");
        }
        // Tracing is per thread: the Python thread stops it itself, after
        // the cell it may be running.
        let untrace = Box::new(|| {
            if let Err(e) = debugging::call("untrace", &[]) {
                log::warn!("stopping debugpy's tracing: {e}");
            }
        });
        let _ = self.queue.send(Work::Call(untrace));
    }

    fn dap(&self) -> Result<&Arc<Connection>, String> {
        self.session
            .as_ref()
            .map(|s| &s.dap)
            .ok_or_else(|| "the debugger is not started".to_string())
    }

    async fn forward(&self, message: Value) -> Result<Value, String> {
        self.dap()?.request(message).await
    }

    /// debugpy answers `attach` only after `configurationDone`, which a
    /// frontend sends only after the answer to `attach`: the kernel sends
    /// `configurationDone` itself once the adapter says `initialized`, and
    /// answers the frontend's own one (as ipykernel does).
    async fn attach(&mut self, mut message: Value) -> Result<Value, String> {
        let port = self.port.ok_or("debugpy is not listening")?;
        message["arguments"]["connect"] = json!({"host": "127.0.0.1", "port": port});
        // Only the user's code: cells and modules outside the environment's
        // libraries; stepping never leads into IPython or the kernel.
        if message["arguments"]["justMyCode"].is_null() {
            message["arguments"]["justMyCode"] = Value::Bool(true);
        }
        let session = self.session.as_mut().ok_or("the debugger is not started")?;
        if session.attached {
            return session.dap.request(message).await;
        }
        let answer = session.dap.send(message).await?;
        let mut initialized = session.initialized.clone();
        tokio::time::timeout(INITIALIZED_TIMEOUT, initialized.wait_for(|done| *done))
            .await
            .map_err(|_| format!("debugpy did not initialize within {INITIALIZED_TIMEOUT:?}"))?
            .map_err(|_| "debugpy closed the connection".to_string())?;
        let done = session
            .dap
            .request(json!({"type": "request", "command": "configurationDone", "arguments": {}}))
            .await?;
        if done["success"] != Value::Bool(true) {
            return Err(format!("debugpy refused configurationDone: {done}"));
        }
        let reply = answer.wait().await?;
        session.attached = reply["success"] == Value::Bool(true);
        Ok(reply)
    }

    async fn debug_info(&mut self, message: &Value) -> Result<Value, String> {
        if self.cell_files.is_none() {
            self.cell_files = Some(python_json("debug_info", Vec::new()).await?);
        }
        let mut body = self.cell_files.clone().unwrap_or_default();
        let breakpoints: Vec<Value> = self
            .breakpoints
            .iter()
            .map(|(source, lines)| json!({"source": source, "breakpoints": lines}))
            .collect();
        let stopped: Vec<i64> = lock(&self.shared.stopped).iter().copied().collect();
        body["isStarted"] = Value::Bool(self.session.is_some());
        body["breakpoints"] = Value::from(breakpoints);
        body["stoppedThreads"] = Value::from(stopped);
        body["richRendering"] = Value::Bool(true);
        body["exceptionPaths"] = json!(["Python Exceptions"]);
        body["copyToGlobals"] = Value::Bool(true);
        let mut reply = response(message, true);
        reply["body"] = body;
        Ok(reply)
    }

    async fn dump_cell(&self, message: &Value) -> Result<Value, String> {
        let code = message["arguments"]["code"]
            .as_str()
            .ok_or("dumpCell needs arguments.code, the cell's source")?;
        let path = python("dump_cell", vec![code.to_string()]).await?;
        let mut reply = response(message, true);
        reply["body"] = json!({ "sourcePath": path });
        Ok(reply)
    }

    async fn set_breakpoints(&mut self, message: Value) -> Result<Value, String> {
        let source = message["arguments"]["source"]["path"]
            .as_str()
            .ok_or("setBreakpoints needs arguments.source.path")?
            .to_string();
        let reply = self.forward(message).await?;
        if reply["success"] == Value::Bool(true) {
            // debugpy may move a breakpoint to another line: keep its lines.
            let placed: Vec<Value> = reply["body"]["breakpoints"]
                .as_array()
                .map(|b| b.iter().map(|b| json!({"line": b["line"]})).collect())
                .unwrap_or_default();
            self.breakpoints.insert(source, Value::from(placed));
        }
        Ok(reply)
    }

    fn any_stopped(&self) -> bool {
        !lock(&self.shared.stopped).is_empty()
    }

    /// The user's globals, read by the kernel while nothing is stopped.
    async fn inspect_variables(&self, message: &Value) -> Result<Value, String> {
        let variables = python_json("inspect_variables", Vec::new()).await?;
        Ok(variables_response(
            message,
            variables.as_array().cloned().unwrap_or_default(),
        ))
    }

    async fn variables(&self, message: Value) -> Result<Value, String> {
        if !self.any_stopped() {
            let reference = message["arguments"]["variablesReference"]
                .as_i64()
                .ok_or("variables needs arguments.variablesReference")?;
            let variables = python_json("variables", vec![reference.to_string()]).await?;
            return Ok(variables_response(
                &message,
                variables.as_array().cloned().unwrap_or_default(),
            ));
        }
        let mut reply = self.forward(message).await?;
        if let Some(variables) = reply["body"]["variables"].as_array_mut() {
            variables.retain(visible);
        }
        Ok(reply)
    }

    async fn rich_inspect_variables(&self, message: &Value) -> Result<Value, String> {
        let name = message["arguments"]["variableName"]
            .as_str()
            .unwrap_or_default();
        if !is_identifier(name) {
            // pydevd's groups are not variables: nothing to render.
            let grouping = matches!(name, "special variables" | "function variables");
            let mut reply = response(message, grouping);
            reply["body"] = json!({"data": {}, "metadata": {}});
            return Ok(reply);
        }
        let rich = if !self.any_stopped() {
            python_json("rich_inspect", vec![name.to_string()]).await?
        } else {
            let evaluated = self
                .forward(json!({
                    "type": "request",
                    "command": "evaluate",
                    "arguments": {
                        "expression": format!("get_ipython().display_formatter.format({name})"),
                        "frameId": message["arguments"]["frameId"],
                        // The full repr, not one shortened for display.
                        "context": "clipboard",
                    },
                }))
                .await?;
            match evaluated["body"]["result"].as_str() {
                Some(repr) if evaluated["success"] == Value::Bool(true) => {
                    python_json("parse_rich", vec![repr.to_string()]).await?
                }
                _ => json!({"data": {}, "metadata": {}}),
            }
        };
        let data = rich["data"].clone();
        let metadata: serde_json::Map<String, Value> = rich["metadata"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| data.get(k.as_str()).is_some())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let mut reply = response(message, true);
        reply["body"] = json!({"data": data, "metadata": metadata});
        Ok(reply)
    }

    async fn copy_to_globals(&self, message: &Value) -> Result<Value, String> {
        let arguments = &message["arguments"];
        let destination = arguments["dstVariableName"].as_str().unwrap_or_default();
        let source = arguments["srcVariableName"].as_str().unwrap_or_default();
        if !is_identifier(destination) || !is_identifier(source) {
            return Err(format!(
                "copyToGlobals copies one variable to another: srcVariableName \
                 ({source:?}) and dstVariableName ({destination:?}) must be Python names"
            ));
        }
        let mut reply = self
            .forward(json!({
                "type": "request",
                "seq": message["seq"],
                "command": "setExpression",
                "arguments": {
                    "expression": format!("globals()['{destination}']"),
                    "value": source,
                    "frameId": arguments["srcFrameId"],
                },
            }))
            .await?;
        reply["command"] = Value::from("copyToGlobals");
        Ok(reply)
    }

    async fn modules(&self, message: &Value) -> Result<Value, String> {
        let body = python_json("modules", vec![message["arguments"].to_string()]).await?;
        let mut reply = response(message, true);
        reply["body"] = body;
        Ok(reply)
    }
}

/// The `source` request: a file's text, read here (debugpy knows cells
/// only by the file they were dumped to).
async fn source(message: &Value) -> Value {
    let path = message["arguments"]["source"]["path"]
        .as_str()
        .unwrap_or_default();
    match tokio::fs::read_to_string(path).await {
        Ok(content) => {
            let mut reply = response(message, true);
            reply["body"] = json!({ "content": content });
            reply
        }
        Err(_) => failure(message, "source unavailable"),
    }
}
