//! What a node agent tells the scheduler about its node in its Hello: the
//! name that tells it apart from the allocation's other nodes, the CPUs it
//! may use, the GPUs it may hand out and its memory. The job system's word
//! comes first: it knows what the allocation holds on this node, which may
//! be less than the machine has.

/// What the agent's Hello says of its node.
pub struct Node {
    pub name: String,
    pub cpus: u32,
    pub gpus: Vec<String>,
    /// MB (`pmp_scheduler::memory::this_node`); None where nothing says.
    pub memory_mb: Option<u32>,
}

impl Node {
    /// This node, as the job system described it to this process.
    pub fn this() -> Node {
        let cpus = cpus();
        Node {
            name: name(),
            cpus,
            gpus: gpus(std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref()),
            memory_mb: pmp_scheduler::memory::this_node(|name| std::env::var(name).ok(), cpus),
        }
    }
}

/// Slurm's name for the node: nodes of one cluster may share a host name
/// (as on the test Slurm, whose nodes are all this machine), never a
/// Slurm name. Under Flux, the name the scheduler gave this agent's rank;
/// in a Flux allocation's job, its rank's in the enclosing instance, as
/// the job's script said it (`allocation_jobs::RANKS_VARIABLE`).
fn name() -> String {
    use pmp_scheduler::backend::allocation_jobs::{self, HOSTS_VARIABLE, RANKS_VARIABLE};
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if let Some(name) = var("SLURMD_NODENAME") {
        return name;
    }
    let task_rank = var("FLUX_TASK_RANK");
    let allocation_name = || {
        let rank = task_rank.as_deref()?.trim().parse().ok()?;
        allocation_jobs::flux_allocation_node_name(
            &var(RANKS_VARIABLE)?,
            &var(HOSTS_VARIABLE)?,
            rank,
        )
    };
    flux_name(
        var(pmp_scheduler::backend::flux::NODE_NAMES_VARIABLE).as_deref(),
        task_rank.as_deref(),
    )
    .or_else(allocation_name)
    .unwrap_or_else(pmp_scheduler::host::name)
}

/// The agents' job has one task per node in broker rank order
/// (`FluxBackend::agent_arguments`), so task rank i is on the i-th of
/// `names` (the instance's nodes as the scheduler names them, where ranks
/// on one host are `<host>#<rank>`). None outside such a job.
fn flux_name(names: Option<&str>, task_rank: Option<&str>) -> Option<String> {
    let rank: usize = task_rank?.trim().parse().ok()?;
    names?.split(',').nth(rank).map(String::from)
}

/// The CPUs of the allocation on this node, else those this process may
/// run on (its affinity mask: a cgroup or taskset may allow fewer than the
/// machine has), else the machine's.
fn cpus() -> u32 {
    if let Some(cpus) = std::env::var("SLURM_CPUS_ON_NODE")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|&n| n > 0)
    {
        return cpus;
    }
    affinity_cpus()
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32))
}

#[cfg(target_os = "linux")]
fn affinity_cpus() -> Option<u32> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, which
    // sched_getaffinity fills in for this process.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        Some(libc::CPU_COUNT(&set) as u32).filter(|&n| n > 0)
    }
}

#[cfg(not(target_os = "linux"))]
fn affinity_cpus() -> Option<u32> {
    None
}

/// The GPU ids in `CUDA_VISIBLE_DEVICES` (as the job system set it for
/// the agent): none when unset, empty, or Slurm's "NoDevFiles" (a node
/// whose GPUs are not the allocation's).
fn gpus(visible: Option<&str>) -> Vec<String> {
    match visible.map(str::trim) {
        None | Some("") | Some("NoDevFiles") => Vec::new(),
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(String::from)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::{flux_name, gpus};

    #[test]
    fn under_flux_an_agent_is_the_node_of_its_task_rank() {
        let names = Some("vm#0,vm#1");
        assert_eq!(flux_name(names, Some("1")).as_deref(), Some("vm#1"));
        assert_eq!(flux_name(names, Some("0")).as_deref(), Some("vm#0"));
        assert_eq!(flux_name(names, Some("2")), None, "not one of them");
        assert_eq!(flux_name(names, None), None, "not a Flux task");
        assert_eq!(flux_name(None, Some("0")), None, "no names given");
        assert_eq!(flux_name(names, Some("x")), None);
    }

    #[test]
    fn gpu_ids_are_the_visible_devices_and_none_for_slurms_no_devices() {
        assert_eq!(gpus(Some("0,1")), vec!["0", "1"]);
        assert_eq!(gpus(Some(" 2 , GPU-ab12 ,")), vec!["2", "GPU-ab12"]);
        assert!(gpus(Some("NoDevFiles")).is_empty());
        assert!(gpus(Some("")).is_empty());
        assert!(gpus(None).is_empty());
    }
}
