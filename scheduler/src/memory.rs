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

/// This host's memory for this process: its cgroup's limit where it sets
/// one (cgroup v2's `memory.max`, else v1's `memory.limit_in_bytes`, which
/// Slurm's task/cgroup plugin still sets on many clusters), else the
/// machine's (`MemTotal`).
pub fn host() -> Option<u32> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let cgroups = read("/proc/self/cgroup");
    let v2 = || {
        let dir = cgroup_path(cgroups.as_deref())?;
        read(&format!("/sys/fs/cgroup{dir}/memory.max"))
    };
    let v1 = || {
        let dir = cgroup_v1_memory_path(cgroups.as_deref())?;
        read(&format!("/sys/fs/cgroup/memory{dir}/memory.limit_in_bytes"))
    };
    let limit = v2().or_else(v1).and_then(|text| cgroup_limit(&text));
    let total = read("/proc/meminfo").and_then(|text| mem_total(&text));
    match (limit, total) {
        // A limit above the machine's memory limits nothing (v1 says no
        // limit as a number near 2^63).
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

/// The directory of the cgroup v1 memory controller's hierarchy in
/// `/proc/self/cgroup` ("4:memory:/slurm/uid_1000/job_12/step_0"; the
/// controller may share its hierarchy: "5:cpuacct,memory:/...").
fn cgroup_v1_memory_path(text: Option<&str>) -> Option<String> {
    text?.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then(|| path.trim().trim_end_matches('/').to_string())
    })
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
        // cgroup v1: the memory controller's line, alone or shared.
        let v1 = "12:pids:/slurm/uid_0/job_7\n4:memory:/slurm/uid_0/job_7/step_0/\n";
        assert_eq!(
            cgroup_v1_memory_path(Some(v1)).as_deref(),
            Some("/slurm/uid_0/job_7/step_0")
        );
        assert_eq!(
            cgroup_v1_memory_path(Some("5:cpuacct,memory:/job\n")).as_deref(),
            Some("/job")
        );
        assert_eq!(cgroup_v1_memory_path(Some("0::/user.slice\n")), None);
        // v1's "no limit" is a number near 2^63: as large as MB go, so the
        // machine's total wins in `host`.
        assert_eq!(cgroup_limit("9223372036854771712\n"), Some(u32::MAX));
        assert_eq!(
            mem_total("MemTotal:       16384000 kB\nMemFree: 1 kB\n"),
            Some(16000)
        );
        assert!(host().is_some(), "Linux says its memory");
    }
}
