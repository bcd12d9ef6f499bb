//! How many pilot jobs a pool needs: the partition's node shape (its CPUs
//! and GPUs per node, from one `sinfo` call when the executor starts), how
//! many workers one node holds, and so how many one-node jobs hold them
//! all. Each job runs one node agent, which forks that node's workers.

use crate::jobs::command;
use crate::resources::ResourceRequest;
use std::path::Path;

/// What one node of a partition has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeShape {
    pub cpus: u32,
    pub gpus: u32,
}

impl NodeShape {
    /// How many workers of `worker` one such node holds (0: not one).
    pub fn workers(&self, worker: &ResourceRequest) -> u32 {
        let by_cpus = self.cpus / worker.cpus().max(1);
        match worker.gpus() {
            0 => by_cpus,
            gpus => by_cpus.min(self.gpus / gpus),
        }
    }
}

/// The node shapes of `partition` (None: the default one, which sinfo
/// marks with `*`) among the lines of `sinfo -h -e -o %P|%c|%G`, one line
/// per node configuration.
pub fn parse_sinfo(listing: &str, partition: Option<&str>) -> Vec<NodeShape> {
    listing
        .lines()
        .filter_map(|line| {
            let mut parts = line.trim().split('|');
            let (name, cpus, gres) = (parts.next()?, parts.next()?, parts.next()?);
            let wanted = match partition {
                Some(wanted) => name.trim_end_matches('*') == wanted,
                None => name.ends_with('*'),
            };
            wanted.then_some(NodeShape {
                cpus: cpus.trim().parse().ok()?,
                gpus: gres_gpus(gres),
            })
        })
        .collect()
}

/// The GPUs of a node's GRES (`gpu:2`, `gpu:a100:4(S:0-1)`, `(null)`).
pub fn gres_gpus(gres: &str) -> u32 {
    gres.split(',')
        .filter_map(|item| {
            let fields: Vec<&str> = item.split('(').next()?.split(':').collect();
            match fields[..] {
                ["gpu", .., count] => count.parse::<u32>().ok(),
                _ => None,
            }
        })
        .sum()
}

/// Of `shapes`, the node that holds the most workers of `worker`, and how
/// many; None where no node holds even one.
pub fn roomiest(shapes: &[NodeShape], worker: &ResourceRequest) -> Option<(NodeShape, u32)> {
    shapes
        .iter()
        .map(|shape| (*shape, shape.workers(worker)))
        .filter(|(_, workers)| *workers > 0)
        .max_by_key(|(_, workers)| *workers)
}

/// How many workers each job runs: as few jobs as nodes of `per_node`
/// workers hold `workers`, all full but the last.
pub fn jobs_for(workers: u32, per_node: u32) -> Vec<u32> {
    let per_node = per_node.max(1);
    let mut jobs = Vec::new();
    let mut left = workers;
    while left > 0 {
        let here = left.min(per_node);
        jobs.push(here);
        left -= here;
    }
    jobs
}

/// The partition sbatch `arguments` name (`--partition=P`, `-p P`, `-pP`),
/// the last one counting, as for sbatch.
pub fn named_partition(arguments: &[String]) -> Option<String> {
    let mut name = None;
    for (i, argument) in arguments.iter().enumerate() {
        if let Some(value) = argument.strip_prefix("--partition=") {
            name = Some(value.to_string());
        } else if argument == "--partition" || argument == "-p" {
            name = arguments.get(i + 1).cloned().or(name);
        } else if let Some(value) = argument.strip_prefix("-p") {
            name = Some(value.to_string());
        }
    }
    name
}

/// The node shapes of `partition` (None: the default) as sinfo says them.
pub fn ask(sinfo: &Path, partition: Option<&str>) -> Result<Vec<NodeShape>, String> {
    let args = ["-h", "-e", "-o", "%P|%c|%G"].map(String::from);
    let listing = command::answer(sinfo, &args)
        .map_err(|why| format!("sinfo did not say what the partition's nodes hold: {why}"))?;
    let shapes = parse_sinfo(&listing, partition);
    if shapes.is_empty() {
        return Err(match partition {
            Some(name) => format!(
                "sinfo lists no partition {name:?}: name one it lists with --partition in \
                 command_line_argument_lst"
            ),
            None => "sinfo names no default partition: name one with --partition in \
                     command_line_argument_lst"
                .to_string(),
        });
    }
    Ok(shapes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(cores: u32, threads: u32, gpus: u32) -> ResourceRequest {
        ResourceRequest::of(cores, threads, gpus)
    }

    #[test]
    fn sinfo_lines_give_the_named_or_default_partitions_nodes() {
        let listing = "debug*|4|gpu:2\nbig|64|gpu:a100:4(S:0-1),gpu:v100:2\nbig|32|(null)\n";
        let shape = |cpus, gpus| NodeShape { cpus, gpus };
        assert_eq!(parse_sinfo(listing, None), [shape(4, 2)]);
        assert_eq!(
            parse_sinfo(listing, Some("big")),
            [shape(64, 6), shape(32, 0)]
        );
        assert_eq!(parse_sinfo(listing, Some("debug")), [shape(4, 2)]);
        assert!(parse_sinfo(listing, Some("none")).is_empty());
        assert!(parse_sinfo("garbage\n|x|\n", None).is_empty());
    }

    #[test]
    fn a_node_holds_workers_by_cpus_and_gpus() {
        let node = NodeShape { cpus: 4, gpus: 2 };
        assert_eq!(node.workers(&worker(1, 1, 0)), 4);
        assert_eq!(node.workers(&worker(1, 1, 1)), 2);
        assert_eq!(node.workers(&worker(2, 1, 0)), 2, "two ranks each");
        assert_eq!(node.workers(&worker(1, 3, 0)), 1);
        assert_eq!(node.workers(&worker(1, 5, 0)), 0, "more threads than CPUs");
        let shapes = [NodeShape { cpus: 8, gpus: 0 }, node];
        assert_eq!(roomiest(&shapes, &worker(1, 1, 1)), Some((node, 2)));
        assert_eq!(roomiest(&shapes, &worker(1, 1, 0)).unwrap().1, 8);
        assert_eq!(roomiest(&shapes, &worker(1, 1, 3)), None);
    }

    #[test]
    fn as_few_jobs_as_nodes_hold_the_workers() {
        assert_eq!(jobs_for(8, 4), [4, 4]);
        assert_eq!(jobs_for(9, 4), [4, 4, 1]);
        assert_eq!(jobs_for(1, 4), [1]);
        assert_eq!(jobs_for(3, 1), [1, 1, 1]);
    }

    #[test]
    fn the_last_partition_named_counts() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(named_partition(&args(&["--exclusive"])), None);
        assert_eq!(
            named_partition(&args(&["-p", "a", "--partition=b"])).as_deref(),
            Some("b")
        );
        assert_eq!(named_partition(&args(&["-pc"])).as_deref(), Some("c"));
        assert_eq!(
            named_partition(&args(&["--partition", "d"])).as_deref(),
            Some("d")
        );
    }
}
