//! Nodes whose agents the scheduler does not start: the stand-in agents of
//! `examples/simulate.rs`, which measures the scheduler at 1,000 nodes
//! without 1,000 machines. Used by nothing else. The scheduler binds the
//! agents' socket and writes their key file as for real agents, tells the
//! caller where both are, and waits for the agents to connect.

use super::{AgentStep, Backend, WorkerEnvironment};
use crate::capacity::Placement;
use crate::core::Launch;
use crate::ids::WorkerId;
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc::Sender;

/// Where the stand-in agents connect, and the file they read the key from
/// (as real agents do; the caller removes it once read).
#[derive(Clone, Debug)]
pub struct AgentsWanted {
    pub address: String,
    pub key_file: PathBuf,
}

pub struct SimulatedBackend {
    pub agents_wanted: Sender<AgentsWanted>,
}

impl Backend for SimulatedBackend {
    fn command(&self, _: &WorkerEnvironment, _: WorkerId, _: &Launch) -> Result<Command, String> {
        Err(
            "simulated nodes start workers only under their (stand-in) agents: a call \
             spanning nodes cannot run in the simulation"
                .into(),
        )
    }

    fn agents_connect_by_themselves(&self, step: &AgentStep) -> bool {
        let _ = self.agents_wanted.send(AgentsWanted {
            address: step.address.to_string(),
            key_file: step.key_file.to_path_buf(),
        });
        true
    }

    fn under_agent(&self, launch: &Launch) -> bool {
        matches!(launch.placement, Placement::Node(_))
    }
}
