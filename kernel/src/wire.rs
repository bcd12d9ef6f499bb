//! Jupyter messages on the wire: verifying and decoding what arrives,
//! building, signing and encoding what leaves.
//!
//! Requests are kept as raw JSON frames: Rust reads only the header fields it
//! routes on, and the Python side parses the content with its own defaults.
//! That makes the reader tolerant (an `execute_request` without `silent`, a
//! history search without `n` still reaches its handler) and keeps the hot
//! path free of typed round trips. Replies copy the request's header frame
//! verbatim as their `parent_header`.

use bytes::Bytes;
use jupyter_zmq_client::{RawMessage, RuntimeError};
use ring::hmac;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use zeromq::ZmqMessage;

/// The protocol version stamped into every header we send.
pub const PROTOCOL_VERSION: &str = "5.3";

const DELIMITER: &[u8] = b"<IDS|MSG>";
const EMPTY_OBJECT: &[u8] = b"{}";

/// A verified message received on shell, control or stdin.
#[derive(Debug, Clone)]
pub struct Request {
    /// ROUTER routing frames; replies are routed back through them.
    pub identities: Vec<Bytes>,
    /// The header frame exactly as received.
    pub header: Bytes,
    pub msg_type: String,
    /// The subshell (JEP 91) the request is for; `None`: the main shell.
    pub subshell_id: Option<String>,
    pub metadata: Bytes,
    pub content: Bytes,
    pub buffers: Vec<Bytes>,
}

#[derive(Deserialize)]
struct HeaderFields {
    msg_type: String,
    #[serde(default)]
    subshell_id: Option<String>,
}

/// Why an incoming multipart message was dropped.
#[derive(Debug)]
pub enum DecodeError {
    /// Framing or signature problems: a message that must not be trusted.
    Rejected(RuntimeError),
    /// Signed correctly, but the header has no `msg_type`.
    BadHeader(serde_json::Error),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Rejected(RuntimeError::VerifyError(_)) => {
                write!(f, "bad signature (HMAC check failed)")
            }
            DecodeError::Rejected(e) => write!(f, "malformed message: {e}"),
            DecodeError::BadHeader(e) => write!(f, "unreadable header: {e}"),
        }
    }
}

impl Request {
    /// Verify the signature and split the frames. Nothing in the content is
    /// interpreted here.
    pub fn decode(frames: ZmqMessage, key: &Option<hmac::Key>) -> Result<Request, DecodeError> {
        let raw = RawMessage::from_multipart(frames, key).map_err(DecodeError::Rejected)?;
        let mut parts = raw.jparts.into_iter();
        let header = parts.next().unwrap_or_default();
        let _parent = parts.next();
        let metadata = parts.next().unwrap_or_default();
        let content = parts.next().unwrap_or_default();
        let fields: HeaderFields =
            serde_json::from_slice(&header).map_err(DecodeError::BadHeader)?;
        Ok(Request {
            identities: raw.zmq_identities,
            header,
            msg_type: fields.msg_type,
            subshell_id: fields.subshell_id,
            metadata,
            content,
            buffers: parts.collect(),
        })
    }

    /// `execute_request` → `execute_reply`; anything else gets `_reply` appended
    /// so that even an unknown request is answered on the matching type.
    pub fn reply_type(&self) -> String {
        match self.msg_type.strip_suffix("_request") {
            Some(stem) => format!("{stem}_reply"),
            None => format!("{}_reply", self.msg_type),
        }
    }

    /// A reply to this request, routed to its sender.
    pub fn reply(&self, content: Bytes) -> Outgoing {
        Outgoing {
            identities: self.identities.clone(),
            msg_type: self.reply_type(),
            parent: self.header.clone(),
            metadata: Bytes::from_static(EMPTY_OBJECT),
            content,
            buffers: Vec::new(),
        }
    }

    /// Parse the content as `T`, for the few requests Rust answers itself.
    pub fn content_as<'a, T: Deserialize<'a>>(&'a self) -> Option<T> {
        serde_json::from_slice(&self.content).ok()
    }
}

/// A message on its way out. The header is written when it is encoded.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// ROUTER routing frames, or the topic on IOPub.
    pub identities: Vec<Bytes>,
    pub msg_type: String,
    /// The parent's header frame, `{}` when there is none.
    pub parent: Bytes,
    pub metadata: Bytes,
    pub content: Bytes,
    pub buffers: Vec<Bytes>,
}

impl Outgoing {
    /// An IOPub message; the topic is set by the publisher.
    pub fn broadcast(msg_type: impl Into<String>, parent: Option<&Bytes>, content: Bytes) -> Self {
        Outgoing {
            identities: Vec::new(),
            msg_type: msg_type.into(),
            parent: parent
                .cloned()
                .unwrap_or_else(|| Bytes::from_static(EMPTY_OBJECT)),
            metadata: Bytes::from_static(EMPTY_OBJECT),
            content,
            buffers: Vec::new(),
        }
    }

    pub fn with_metadata(mut self, metadata: Bytes) -> Self {
        self.metadata = metadata;
        self
    }

    pub fn with_buffers(mut self, buffers: Vec<Bytes>) -> Self {
        self.buffers = buffers;
        self
    }
}

/// Serialize a content struct; our own structs cannot fail to serialize.
pub fn json<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("JSON content"))
}

#[derive(Serialize)]
struct Header<'a> {
    msg_id: String,
    msg_type: &'a str,
    session: &'a str,
    username: &'static str,
    date: String,
    version: &'static str,
}

/// Signs and frames outgoing messages for one kernel session.
pub struct Signer {
    key: Option<hmac::Key>,
    session: String,
    counter: AtomicU64,
}

impl Signer {
    pub fn new(key: Option<hmac::Key>, session: String) -> Self {
        Signer {
            key,
            session,
            counter: AtomicU64::new(0),
        }
    }

    pub fn session(&self) -> &str {
        &self.session
    }

    pub fn key(&self) -> &Option<hmac::Key> {
        &self.key
    }

    /// Frame `message`: identities, delimiter, signature, the four JSON
    /// frames, buffers. The signature covers only the JSON frames.
    pub fn encode(&self, message: Outgoing) -> ZmqMessage {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let header = json(&Header {
            msg_id: format!("{}_{n}", self.session),
            msg_type: &message.msg_type,
            session: &self.session,
            username: "pmp",
            date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            version: PROTOCOL_VERSION,
        });
        let json_frames = [header, message.parent, message.metadata, message.content];
        let signature = match &self.key {
            Some(key) => {
                let mut context = hmac::Context::with_key(key);
                for frame in &json_frames {
                    context.update(frame);
                }
                Bytes::from(hex::encode(context.sign().as_ref()))
            }
            None => Bytes::new(),
        };
        let mut frames = message.identities;
        frames.reserve(6 + message.buffers.len());
        frames.push(Bytes::from_static(DELIMITER));
        frames.push(signature);
        frames.extend(json_frames);
        frames.extend(message.buffers);
        ZmqMessage::try_from(frames).expect("a message always has frames")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Option<hmac::Key> {
        Some(hmac::Key::new(hmac::HMAC_SHA256, b"secret"))
    }

    fn request(content: &str) -> Request {
        let signer = Signer::new(key(), "client".into());
        let mut message =
            Outgoing::broadcast("execute_request", None, Bytes::from(content.to_owned()));
        message.identities = vec![Bytes::from_static(b"peer")];
        Request::decode(signer.encode(message), &key()).expect("a valid request")
    }

    #[test]
    fn decodes_what_it_encodes_and_keeps_content_raw() {
        let req = request(r#"{"code":"1+1"}"#);
        assert_eq!(req.msg_type, "execute_request");
        assert_eq!(req.identities, vec![Bytes::from_static(b"peer")]);
        // No `silent`/`store_history`: still accepted, content untouched.
        assert_eq!(&req.content[..], br#"{"code":"1+1"}"#);
        assert_eq!(req.reply_type(), "execute_reply");
    }

    #[test]
    fn reply_is_routed_to_the_sender_with_the_request_as_parent() {
        let req = request("{}");
        let reply = req.reply(Bytes::from_static(b"{}"));
        assert_eq!(reply.identities, req.identities);
        assert_eq!(reply.parent, req.header);
        assert_eq!(reply.msg_type, "execute_reply");
    }

    #[test]
    fn rejects_a_bad_signature() {
        let signer = Signer::new(
            Some(hmac::Key::new(hmac::HMAC_SHA256, b"other")),
            "c".into(),
        );
        let frames = signer.encode(Outgoing::broadcast("kernel_info_request", None, json(&())));
        assert!(matches!(
            Request::decode(frames, &key()),
            Err(DecodeError::Rejected(RuntimeError::VerifyError(_)))
        ));
    }

    #[test]
    fn message_ids_are_unique_within_a_session() {
        let signer = Signer::new(None, "s".into());
        let a = signer.encode(Outgoing::broadcast("status", None, json(&())));
        let b = signer.encode(Outgoing::broadcast("status", None, json(&())));
        assert_ne!(a.get(2), b.get(2));
    }
}
