//! A Debug Adapter Protocol client: the kernel's TCP connection to the
//! debugpy adapter that runs beside the kernel. Messages are JSON framed by
//! a `Content-Length` header. Requests are numbered here (the kernel adds
//! requests of its own to the frontend's, so the frontend's numbers could
//! collide) and each response goes back to whoever sent its request;
//! events go to one channel in the order they came.

use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

const HEADER: &str = "Content-Length:";
const SEPARATOR: &[u8] = b"\r\n\r\n";

/// One message as it goes over the wire.
pub fn encode(message: &Value) -> Vec<u8> {
    let body = message.to_string();
    let mut frame = format!("{HEADER} {}\r\n\r\n", body.len()).into_bytes();
    frame.extend_from_slice(body.as_bytes());
    frame
}

/// Splits the byte stream from the adapter into messages.
#[derive(Default)]
pub struct Decoder {
    buffer: Vec<u8>,
}

impl Decoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete message, `Ok(None)` until one has arrived whole.
    /// A malformed frame is an error: the stream cannot be resynchronised.
    pub fn next_message(&mut self) -> Result<Option<Value>, String> {
        let Some(end) = self
            .buffer
            .windows(SEPARATOR.len())
            .position(|w| w == SEPARATOR)
        else {
            return Ok(None);
        };
        let headers = std::str::from_utf8(&self.buffer[..end])
            .map_err(|_| "a DAP header is not UTF-8".to_string())?;
        let length = headers
            .split("\r\n")
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case("Content-Length")
                    .then(|| value.trim().parse::<usize>())
            })
            .ok_or_else(|| format!("a DAP header without {HEADER}: {headers:?}"))?
            .map_err(|e| format!("a DAP {HEADER} that is not a number: {e}"))?;
        let start = end + SEPARATOR.len();
        if self.buffer.len() < start + length {
            return Ok(None);
        }
        let message = serde_json::from_slice(&self.buffer[start..start + length])
            .map_err(|e| format!("a DAP message that is not JSON: {e}"));
        self.buffer.drain(..start + length);
        message.map(Some)
    }
}

type Pending = Arc<Mutex<HashMap<i64, oneshot::Sender<Value>>>>;

/// The connection to the adapter; requests may be sent from any task.
pub struct Connection {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Pending,
    seq: AtomicI64,
}

impl Connection {
    /// Connect to the adapter listening on `port` (on this host). Events
    /// arrive on `events`, which closes when the adapter hangs up.
    pub async fn connect(port: u16, events: mpsc::UnboundedSender<Value>) -> std::io::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        let (reader, writer) = stream.into_split();
        let pending: Pending = Arc::default();
        tokio::spawn(read(reader, Arc::clone(&pending), events));
        Ok(Connection {
            writer: tokio::sync::Mutex::new(writer),
            pending,
            seq: AtomicI64::new(1),
        })
    }

    /// Send `request` (its `seq` replaced by ours) and return where its
    /// response will arrive, with the caller's `seq` as `request_seq`.
    pub async fn send(&self, mut request: Value) -> Result<Response, String> {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        let theirs = request.get("seq").cloned().unwrap_or(Value::from(seq));
        request["seq"] = Value::from(seq);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(seq, tx);
        let written = self.writer.lock().await.write_all(&encode(&request)).await;
        if let Err(e) = written {
            lock(&self.pending).remove(&seq);
            return Err(format!("cannot send to debugpy: {e}"));
        }
        Ok(Response { rx, theirs })
    }

    /// Send `request` and wait for its response.
    pub async fn request(&self, request: Value) -> Result<Value, String> {
        self.send(request).await?.wait().await
    }

    /// Hang up: the adapter then ends this debugging session.
    pub async fn close(&self) {
        let _ = self.writer.lock().await.shutdown().await;
    }
}

/// A response on its way.
pub struct Response {
    rx: oneshot::Receiver<Value>,
    theirs: Value,
}

impl Response {
    pub async fn wait(self) -> Result<Value, String> {
        let mut response = self
            .rx
            .await
            .map_err(|_| "debugpy closed the connection before it answered".to_string())?;
        response["request_seq"] = self.theirs;
        Ok(response)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

async fn read(
    mut reader: tokio::net::tcp::OwnedReadHalf,
    pending: Pending,
    events: mpsc::UnboundedSender<Value>,
) {
    let mut decoder = Decoder::default();
    let mut chunk = vec![0u8; 64 * 1024];
    'reading: loop {
        match reader.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => decoder.push(&chunk[..n]),
            Err(e) => {
                log::warn!("debugpy connection: {e}");
                break;
            }
        }
        loop {
            let message = match decoder.next_message() {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(e) => {
                    log::warn!("debugpy connection: {e}");
                    break 'reading;
                }
            };
            match message.get("type").and_then(Value::as_str) {
                Some("response") => {
                    let seq = message.get("request_seq").and_then(Value::as_i64);
                    match seq.and_then(|seq| lock(&pending).remove(&seq)) {
                        Some(waiting) => {
                            let _ = waiting.send(message);
                        }
                        None => log::debug!("debugpy answered nothing we asked: {message}"),
                    }
                }
                Some("event") => {
                    let _ = events.send(message);
                }
                _ => log::debug!("debugpy sent neither a response nor an event: {message}"),
            }
        }
    }
    // Whoever still waits learns that no answer will come.
    lock(&pending).clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_message_survives_encoding_and_decoding() {
        let message = json!({"type": "event", "event": "stopped", "body": {"text": "é"}});
        let mut decoder = Decoder::default();
        decoder.push(&encode(&message));
        assert_eq!(decoder.next_message().unwrap(), Some(message));
        assert_eq!(decoder.next_message().unwrap(), None);
    }

    #[test]
    fn messages_split_and_joined_arbitrarily_come_out_whole_and_in_order() {
        let first = json!({"seq": 1, "type": "response"});
        let second = json!({"seq": 2, "type": "event", "body": "x".repeat(100)});
        let mut wire = encode(&first);
        wire.extend(encode(&second));
        let mut decoder = Decoder::default();
        let mut out = Vec::new();
        for piece in wire.chunks(7) {
            decoder.push(piece);
            while let Some(message) = decoder.next_message().unwrap() {
                out.push(message);
            }
        }
        assert_eq!(out, vec![first, second]);
    }

    #[test]
    fn other_headers_and_header_case_are_accepted() {
        let mut decoder = Decoder::default();
        decoder.push(b"content-length: 2\r\nContent-Type: x\r\n\r\n{}");
        assert_eq!(decoder.next_message().unwrap(), Some(json!({})));
    }

    #[test]
    fn a_frame_without_a_length_is_an_error_that_says_so() {
        let mut decoder = Decoder::default();
        decoder.push(b"Content-Type: x\r\n\r\n{}");
        let error = decoder.next_message().unwrap_err();
        assert!(error.contains("Content-Length"), "{error}");
    }
}
