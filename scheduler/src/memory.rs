//! The memory of a node, as the job system gives it to the allocation
//! there: a node agent's Hello says it, the local backend's one node has
//! the host's, and the capacity keeps each call's `memory_max` of it.
//! Slurm's word comes first (its job may hold less than the machine),
//! then the cgroup this process runs in, then the machine's.

/// MB of memory for this node's allocation, as `var` (the environment)
/// and the files of this machine say it; None where nothing says.
pub fn this_node(var: impl Fn(&str) -> Option<String>, cpus: u32) -> Option<u32> {
    slurm(&var, cpus).or_else(host)
}

/// Slurm's memory for the job on this node: `SLURM_MEM_PER_NODE` (MB),
/// else `SLURM_MEM_PER_CPU` x the node's CPUs. 0 is Slurm's "all of the
/// node's", which it does not count: the host's is then the node's.
pub fn slurm(var: impl Fn(&str) -> Option<String>, cpus: u32) -> Option<u32> {
    let mb = |name: &str| {
        var(name)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&mb| mb > 0)
    };
    let total =
        mb("SLURM_MEM_PER_NODE").or_else(|| Some(mb("SLURM_MEM_PER_CPU")? * u64::from(cpus)))?;
    Some(u32::try_from(total).unwrap_or(u32::MAX))
}

/// This host's memory for this process: its cgroup's `memory.max`
/// (cgroup v2) where it sets one, else the machine's (`MemTotal`).
pub fn host() -> Option<u32> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let limit = cgroup_path(read("/proc/self/cgroup").as_deref())
        .and_then(|dir| read(&format!("/sys/fs/cgroup{dir}/memory.max")))
        .and_then(|text| cgroup_limit(&text));
    let total = read("/proc/meminfo").and_then(|text| mem_total(&text));
    match (limit, total) {
        // A limit above the machine's memory limits nothing.
        (Some(limit), Some(total)) => Some(limit.min(total)),
        (limit, total) => limit.or(total),
    }
}

/// The cgroup v2 directory of `/proc/self/cgroup` ("0::/user.slice/...").
fn cgroup_path(text: Option<&str>) -> Option<String> {
    text?
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(|path| path.trim().trim_end_matches('/').to_string())
}

/// MB of a cgroup's `memory.max`: bytes, or "max" for no limit.
fn cgroup_limit(text: &str) -> Option<u32> {
    let bytes: u64 = text.trim().parse().ok()?;
    Some(u32::try_from(bytes / (1024 * 1024)).unwrap_or(u32::MAX)).filter(|&mb| mb > 0)
}

/// MB of `/proc/meminfo`'s "MemTotal: <n> kB".
fn mem_total(text: &str) -> Option<u32> {
    let line = text.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(u32::try_from(kb / 1024).unwrap_or(u32::MAX)).filter(|&mb| mb > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn slurm_says_memory_per_node_or_per_cpu_and_zero_is_not_a_count() {
        assert_eq!(
            slurm(vars(&[("SLURM_MEM_PER_NODE", "3000")]), 4),
            Some(3000)
        );
        assert_eq!(slurm(vars(&[("SLURM_MEM_PER_CPU", "500")]), 4), Some(2000));
        assert_eq!(
            slurm(
                vars(&[("SLURM_MEM_PER_NODE", "3000"), ("SLURM_MEM_PER_CPU", "500")]),
                4
            ),
            Some(3000)
        );
        assert_eq!(slurm(vars(&[("SLURM_MEM_PER_NODE", "0")]), 4), None);
        assert_eq!(slurm(vars(&[]), 4), None);
    }

    #[test]
    fn a_cgroup_limit_and_the_machines_total_are_read_in_mb() {
        assert_eq!(cgroup_limit("max\n"), None);
        assert_eq!(cgroup_limit("2147483648\n"), Some(2048));
        assert_eq!(
            cgroup_path(Some("0::/user.slice/session-1.scope\n")).as_deref(),
            Some("/user.slice/session-1.scope")
        );
        assert_eq!(cgroup_path(Some("0::/\n")).as_deref(), Some(""));
        assert_eq!(cgroup_path(Some("12:memory:/x\n")), None);
        assert_eq!(
            mem_total("MemTotal:       16384000 kB\nMemFree: 1 kB\n"),
            Some(16000)
        );
        assert!(host().is_some(), "Linux says its memory");
    }
}
