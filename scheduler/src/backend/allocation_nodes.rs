//! The nodes of the allocation pmp runs in, each with its CPUs and GPUs,
//! known before any node agent connects: the scheduler places each call on
//! one of them and refuses at submit a call that fits on none. Slurm says
//! them in its job's variables and `scontrol show job -d`; Flux in the
//! instance's resource set (`flux resource R`).

use super::hostlist;
use crate::capacity::Node;
use crate::handle::BackendChoice;
use crate::jobs::command::{self, QUERY};
use crate::resources::Gpus;
use std::path::{Path, PathBuf};

/// The nodes of this Slurm job: names from `SLURM_JOB_NODELIST`, CPUs
/// from `SLURM_JOB_CPUS_PER_NODE` (`var` reads the environment), GPUs from
/// `job_detail`, the text of `scontrol show job -d <id>` (None: no GPUs
/// known, each node counts 0).
pub fn slurm_nodes(
    var: impl Fn(&str) -> Option<String>,
    job_detail: Option<&str>,
) -> Result<Vec<Node>, String> {
    let value = |name: &str| {
        var(name).ok_or_else(|| {
            format!(
                "{name} is not set: pmp reads the allocation's nodes from it inside a Slurm job"
            )
        })
    };
    // A kernel given only SLURM_JOB_ID (`salloc --no-shell` leaves just
    // that) has not the job's variables: scontrol's detail says the same.
    let described = var("SLURM_JOB_NODELIST").is_none() || var("SLURM_JOB_CPUS_PER_NODE").is_none();
    let (names, cpus) = match job_detail {
        Some(detail) if described => nodes_of_detail(detail)?,
        _ => nodes_of_variables(&value)?,
    };
    let gpus = match job_detail {
        Some(detail) => gpus_per_node(detail, &names)?,
        None => vec![0; names.len()],
    };
    Ok(names
        .into_iter()
        .zip(cpus)
        .zip(gpus)
        .map(|((name, cpus), gpus)| Node {
            name,
            cpus,
            gpus: Gpus::Counted(gpus),
            // Known before any agent says it, so that a call no node has
            // the memory for is refused at submit.
            memory_mb: crate::memory::slurm(&var, cpus),
        })
        .collect())
}

/// The node names and each one's CPUs from the job's variables.
fn nodes_of_variables(
    value: &dyn Fn(&str) -> Result<String, String>,
) -> Result<(Vec<String>, Vec<u32>), String> {
    let nodelist = value("SLURM_JOB_NODELIST")?;
    let names = hostlist::expand(&nodelist).map_err(|why| {
        format!(
            "SLURM_JOB_NODELIST={nodelist:?} is not a Slurm host list ({why}); expected \
             names such as node[1-2,05],gpu01"
        )
    })?;
    if names.is_empty() {
        return Err(format!(
            "SLURM_JOB_NODELIST={nodelist:?} names no node; expected names such as node[1-2]"
        ));
    }
    let counts = value("SLURM_JOB_CPUS_PER_NODE")?;
    let cpus = cpus_per_node(&counts).ok_or_else(|| {
        format!(
            "SLURM_JOB_CPUS_PER_NODE={counts:?} is not a list of CPU counts; expected counts \
             such as 4(x2),2 (4 CPUs on each of two nodes, then 2)"
        )
    })?;
    if cpus.len() != names.len() {
        return Err(format!(
            "SLURM_JOB_CPUS_PER_NODE={counts:?} counts {} node(s), but SLURM_JOB_NODELIST=\
             {nodelist:?} names {}: they must describe the same job",
            cpus.len(),
            names.len()
        ));
    }
    Ok((names, cpus))
}

/// The node names and each one's CPUs from `scontrol show job -d`: its
/// `NodeList=` and, per node, the count of its `CPU_IDs=`.
fn nodes_of_detail(detail: &str) -> Result<(Vec<String>, Vec<u32>), String> {
    let field = |line: &str, name: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(name))
            .map(str::to_string)
    };
    let nodelist = detail
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("NodeList="))
        .and_then(|line| field(line, "NodeList="))
        .ok_or("scontrol show job -d names no NodeList=: pmp cannot tell the job's nodes")?;
    let names = hostlist::expand(&nodelist)
        .map_err(|why| format!("scontrol show job -d says NodeList={nodelist:?}: {why}"))?;
    let mut cpus = vec![0u32; names.len()];
    for line in detail.lines().map(str::trim) {
        let (Some(nodes), Some(ids)) = (
            line.strip_prefix("Nodes=")
                .and_then(|_| field(line, "Nodes=")),
            field(line, "CPU_IDs="),
        ) else {
            continue;
        };
        let count = cpu_id_count(&ids)
            .ok_or_else(|| format!("scontrol show job -d says CPU_IDs={ids:?} for nodes {nodes}, which is not a list such as 0-3,6"))?;
        for host in hostlist::expand(&nodes)
            .map_err(|why| format!("scontrol show job -d names nodes {nodes:?}: {why}"))?
        {
            if let Some(at) = names.iter().position(|name| *name == host) {
                cpus[at] = count;
            }
        }
    }
    if let Some(at) = cpus.iter().position(|&n| n == 0) {
        return Err(format!(
            "scontrol show job -d gives no CPU_IDs= for node {} of NodeList={nodelist}",
            names[at]
        ));
    }
    Ok((names, cpus))
}

/// How many CPUs `0-3,6` lists (5).
fn cpu_id_count(ids: &str) -> Option<u32> {
    let mut count = 0u32;
    for item in ids.split(',') {
        count += match item.split_once('-') {
            Some((a, b)) => b.parse::<u32>().ok()?.checked_sub(a.parse::<u32>().ok()?)? + 1,
            None => {
                item.parse::<u32>().ok()?;
                1
            }
        };
    }
    Some(count)
}

/// `4(x2),2` as 4, 4, 2; None where it is not that.
fn cpus_per_node(counts: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for item in counts.split(',') {
        let (count, repeat) = match item.split_once("(x") {
            Some((count, rest)) => (count, rest.strip_suffix(')')?.parse::<usize>().ok()?),
            None => (item, 1),
        };
        let count = count.parse::<u32>().ok()?;
        if repeat == 0 || cpus.len().saturating_add(repeat) > 1 << 20 {
            return None;
        }
        cpus.extend(std::iter::repeat_n(count, repeat));
    }
    Some(cpus)
}

/// The GPUs of each of `names` from the per-node lines of `scontrol show
/// job -d` (`Nodes=node[1-2] CPU_IDs=0-3 Mem=0 GRES=gpu:2(IDX:0-1)`).
fn gpus_per_node(detail: &str, names: &[String]) -> Result<Vec<u32>, String> {
    let mut gpus: Vec<Option<u32>> = vec![None; names.len()];
    for line in detail.lines().map(str::trim) {
        // Only the per-node lines start so (`NumNodes=`, `NodeList=` do not).
        let Some(rest) = line.strip_prefix("Nodes=") else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let nodes = fields.next().unwrap_or_default();
        let gres = fields
            .find_map(|field| field.strip_prefix("GRES="))
            .unwrap_or_default();
        let count = gpu_count(gres).ok_or_else(|| {
            format!(
                "scontrol show job -d says GRES={gres:?} for nodes {nodes}, which is not a \
                 list of resources such as gpu:2(IDX:0-1) or gpu:a100:2(IDX:0-1)"
            )
        })?;
        let hosts = hostlist::expand(nodes)
            .map_err(|why| format!("scontrol show job -d names nodes {nodes:?}: {why}"))?;
        for host in hosts {
            let at = names.iter().position(|name| *name == host).ok_or_else(|| {
                format!(
                    "scontrol show job -d names node {host}, which SLURM_JOB_NODELIST does \
                     not: the detail is of another job"
                )
            })?;
            gpus[at] = Some(count);
        }
    }
    names
        .iter()
        .zip(gpus)
        .map(|(name, count)| {
            count.ok_or_else(|| {
                format!(
                    "scontrol show job -d has no line `Nodes=... GRES=...` for node {name} of \
                     SLURM_JOB_NODELIST: pmp cannot tell its GPUs"
                )
            })
        })
        .collect()
}

/// The GPUs in a GRES list (`gpu:2(IDX:0-1)`, `gpu:a100:1(IDX:0),gpu:v100:1(IDX:1)`,
/// empty for none); other resources (`mps`, `shard`) are not GPUs. None
/// where it is not such a list.
fn gpu_count(gres: &str) -> Option<u32> {
    let mut total = 0u32;
    for item in split_outside_parentheses(gres) {
        if item.is_empty() {
            continue;
        }
        let (kind, detail) = item.split_once('(').unwrap_or((item, ""));
        let mut fields = kind.split(':');
        if fields.next()? != "gpu" {
            continue;
        }
        let fields: Vec<&str> = fields.collect();
        let count = match fields.last().map(|last| last.parse::<u32>()) {
            Some(Ok(count)) => count,
            // No count (`gpu(IDX:0-1)`, `gpu:a100(IDX:0)`): the devices say it.
            _ => {
                let ids = detail.strip_prefix("IDX:")?.split(')').next()?;
                u32::try_from(idset(ids).ok()?.len()).ok()?
            }
        };
        total = total.checked_add(count)?;
    }
    Some(total)
}

/// `text` split at the commas outside parentheses (`gpu:2(IDX:0,2),mps:1`).
fn split_outside_parentheses(text: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (at, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    items
}

/// The ids of an id set (`0-3`, `0,2-3`, `[0-1]`; Flux RFC 22, Slurm's IDX).
pub fn idset(text: &str) -> Result<Vec<u32>, String> {
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    if inner.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids = Vec::new();
    for range in inner.split(',') {
        let (low, high) = range.split_once('-').unwrap_or((range, range));
        match (low.parse::<u32>(), high.parse::<u32>()) {
            (Ok(low), Ok(high)) if low <= high && high - low < 1 << 20 => ids.extend(low..=high),
            _ => return Err(format!("{text:?} is not a set of ids such as 0-3 or 0,2-3")),
        }
    }
    Ok(ids)
}

/// The nodes of a Flux instance, in rank order, from its resource set:
/// the output of `flux resource R -s up` (RFC 20's R, version 1). `flux
/// resource list` sums the cores of all nodes in a state on one line, so
/// it cannot say a node's own. Ranks on one host (`flux start -s 2`) share
/// a host name, but the server tells agents apart by their node's name: a
/// name that repeats is made `<host>#<rank>` (`unique_names`).
pub fn flux_nodes(resource_set: &str) -> Result<Vec<Node>, String> {
    let bad = |why: String| format!("flux resource R printed what pmp cannot read: {why}");
    let r: serde_json::Value = serde_json::from_str(resource_set)
        .map_err(|e| bad(format!("not JSON ({e}): {resource_set:?}")))?;
    if r["version"] != 1 {
        return Err(bad(format!(
            "version {} of R, where pmp reads version 1",
            r["version"]
        )));
    }
    let execution = &r["execution"];
    let mut ranks = Vec::new();
    for entry in execution["R_lite"]
        .as_array()
        .ok_or_else(|| bad("no R_lite list".into()))?
    {
        let ids = |key: &str, value: &serde_json::Value| match value {
            serde_json::Value::Null => Ok(Vec::new()),
            value => value
                .as_str()
                .ok_or_else(|| bad(format!("{key} is {value}, not an id set")))
                .and_then(|text| idset(text).map_err(bad)),
        };
        let children = &entry["children"];
        let cores = ids("core", &children["core"])?.len();
        let gpus = ids("gpu", &children["gpu"])?.len();
        for rank in ids("rank", &entry["rank"])? {
            ranks.push((rank, cores, gpus));
        }
    }
    ranks.sort_unstable();
    let mut hosts = Vec::new();
    for list in execution["nodelist"]
        .as_array()
        .ok_or_else(|| bad("no nodelist".into()))?
    {
        let list = list
            .as_str()
            .ok_or_else(|| bad(format!("nodelist holds {list}, not a host list")))?;
        hosts.extend(hostlist::expand(list).map_err(bad)?);
    }
    if hosts.len() != ranks.len() {
        return Err(bad(format!(
            "{} host name(s) for {} rank(s)",
            hosts.len(),
            ranks.len()
        )));
    }
    // RFC 20: the nodelist names the ranks in ascending order.
    let names = unique_names(hosts, ranks.iter().map(|&(rank, _, _)| rank));
    Ok(names
        .into_iter()
        .zip(ranks)
        .map(|(name, (_, cores, gpus))| Node {
            name,
            cpus: u32::try_from(cores).unwrap_or(u32::MAX),
            gpus: Gpus::Counted(u32::try_from(gpus).unwrap_or(u32::MAX)),
            // Flux's resource set says no memory: each agent's Hello does.
            memory_mb: None,
        })
        .collect())
}

/// `hosts` (one per rank, in the order of `ranks`) as names no two nodes
/// share: a host named once keeps its name, one named by several ranks
/// becomes `<host>#<rank>` for each (`#` is in no host name).
fn unique_names(hosts: Vec<String>, ranks: impl Iterator<Item = u32>) -> Vec<String> {
    let mut times = std::collections::HashMap::new();
    for host in &hosts {
        *times.entry(host.clone()).or_insert(0u32) += 1;
    }
    hosts
        .into_iter()
        .zip(ranks)
        .map(|(host, rank)| match times[&host] {
            1 => host,
            _ => format!("{host}#{rank}"),
        })
        .collect()
}

/// The nodes of the allocation `choice` runs in: asks Slurm (`scontrol`
/// beside srun, else on PATH) or Flux.
pub fn discover(choice: &BackendChoice) -> Result<Vec<Node>, String> {
    match choice {
        BackendChoice::Slurm { srun } => {
            let job = std::env::var("SLURM_JOB_ID").map_err(|_| {
                "SLURM_JOB_ID is not set: the allocation's nodes are known only inside a \
                 Slurm job (salloc, sbatch)"
                    .to_string()
            })?;
            let scontrol = beside(srun, "scontrol");
            let detail = ask(&scontrol, &["show", "job", "-d", &job])?;
            slurm_nodes(|name| std::env::var(name).ok(), Some(&detail))
        }
        BackendChoice::Flux { flux } => flux_instance_nodes(flux),
        BackendChoice::Simulated { nodes, .. } => Ok(nodes.clone()),
        BackendChoice::Local
        | BackendChoice::SlurmPilots { .. }
        | BackendChoice::FluxAllocations { .. } => Err(
            "only the slurm backend inside an allocation and the flux backend have an \
             allocation's nodes to discover"
                .into(),
        ),
    }
}

/// The nodes of the Flux instance `flux` reaches that are up.
pub fn flux_instance_nodes(flux: &Path) -> Result<Vec<Node>, String> {
    flux_nodes(&ask(flux, &["resource", "R", "-s", "up"])?)
}

/// `name` in the directory of `program`, else `name` on PATH.
fn beside(program: &Path, name: &str) -> PathBuf {
    let path = program.with_file_name(name);
    if path.is_file() {
        path
    } else {
        PathBuf::from(name)
    }
}

/// What `program args` printed, or why it said nothing useful.
fn ask(program: &Path, args: &[&str]) -> Result<String, String> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let output = command::run(program, &args, None, &[], QUERY)?;
    if !output.success {
        return Err(format!(
            "`{} {}` failed: {}",
            program.display(),
            args.join(" "),
            output.said()
        ));
    }
    Ok(output.stdout)
}

#[cfg(test)]
mod tests;
