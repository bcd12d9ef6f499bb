//! pmp's scheduler. Read in this order: `core` (the state machine of tasks and
//! workers), `server` (its event loop), `protocol` and `auth` (what crosses the
//! wire, and `admission`: who may send on it), `process`, `backend` and `zygote` (how workers start), `handle` (the client API), and `plan` (what an Executor's
//! numbers are, and what it refuses, before it starts).

pub mod admission;
pub mod auth;
pub mod backend;
pub mod capacity;
pub mod core;
pub mod handle;
pub mod host;
pub mod ids;
pub mod jobs;
pub mod large_frames;
pub mod memory;
pub mod plan;
pub mod process;
pub mod protocol;
pub mod resources;
pub mod seal;
pub mod server;
pub mod shared_memory;
pub mod store;
pub mod zygote;

pub use bytes::Bytes;
#[cfg(feature = "python")]
pub mod python_frames;

/// Whether the client's environment turns the switch `variable` off
/// (`0`, `false`, `no` or `off`): how a speed-up is disabled to compare,
/// or to work around it.
pub(crate) fn switched_off(variable: &str) -> bool {
    std::env::var(variable).is_ok_and(|value| {
        matches!(
            value.trim().to_ascii_lowercase().as_str(),
            "0" | "false" | "no" | "off"
        )
    })
}
