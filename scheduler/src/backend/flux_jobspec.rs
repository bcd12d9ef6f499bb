//! The jobspec (RFC 14/25, version 1) of one worker job: what `flux run -n
//! N -c T [-g G] --job-name=pmp-worker <options> pmp-worker` would submit
//! (compare `flux run --dry-run`), written here so that starting a worker
//! costs two small C commands instead of flux-core's Python CLI.

use super::flux_options::JobOptions;
use crate::resources::ResourceRequest;
use serde_json::{json, Map, Value};

/// What the job runs and where, with the environment it is to have.
pub struct JobRequest<'a> {
    pub resources: &'a ResourceRequest,
    pub command: Vec<String>,
    pub cwd: String,
    pub environment: Map<String, Value>,
    pub options: &'a JobOptions,
    /// `flux run`'s default rlimit propagation (see `current_rlimits`).
    pub rlimits: Map<String, Value>,
    /// `-N`: the slots spread over this many nodes.
    pub nodes: Option<u32>,
    /// `--exclusive` (with `nodes`): the nodes whole.
    pub exclusive: bool,
}

/// The jobspec `flux run` builds for the same request: one slot per rank
/// with `-c` cores and `-g` GPUs in it, one task per slot; with `-N` the
/// slots inside that many nodes, as many on each as the most ranks a node
/// gets, and the tasks counted in total where they do not split evenly
/// (flux-core's `JobspecV1.from_command`).
pub fn jobspec(request: &JobRequest) -> Value {
    let r = request.resources;
    let mut slot = vec![json!({"type": "core", "count": r.threads_per_core})];
    if r.gpus_per_core > 0 {
        slot.push(json!({"type": "gpu", "count": r.gpus_per_core}));
    }
    let mut shell_options = Map::new();
    shell_options.insert("rlimit".into(), Value::Object(request.rlimits.clone()));
    request.options.apply_to(&mut shell_options);
    let name = request.options.name.as_deref().unwrap_or("pmp-worker");
    let (resources, count) = match request.nodes {
        None => (
            json!({"type": "slot", "count": r.cores, "with": slot, "label": "task"}),
            json!({"per_slot": 1}),
        ),
        Some(nodes) => {
            let slots = json!({
                "type": "slot", "count": r.cores.div_ceil(nodes), "with": slot, "label": "task"
            });
            let mut node = json!({"type": "node", "count": nodes, "with": [slots]});
            if request.exclusive {
                node["exclusive"] = true.into();
            }
            let count = if r.cores.is_multiple_of(nodes) {
                json!({"per_slot": 1})
            } else {
                json!({"total": r.cores})
            };
            (node, count)
        }
    };
    json!({
        "resources": [resources],
        "tasks": [{"command": request.command, "slot": "task", "count": count}],
        "attributes": {"system": {
            "duration": 0,
            "environment": request.environment,
            "cwd": request.cwd,
            "job": {"name": name},
            "shell": {"options": shell_options},
        }},
        "version": 1,
    })
}

/// The soft limits `flux run` passes on by default: every RLIMIT_* but
/// memlock, msgqueue, nice, rtprio, rttime and sigpending (flux-core's
/// `get_filtered_rlimits`), -1 where unlimited.
pub fn current_rlimits() -> Map<String, Value> {
    let limits = [
        ("cpu", libc::RLIMIT_CPU),
        ("fsize", libc::RLIMIT_FSIZE),
        ("data", libc::RLIMIT_DATA),
        ("stack", libc::RLIMIT_STACK),
        ("core", libc::RLIMIT_CORE),
        ("rss", libc::RLIMIT_RSS),
        ("nproc", libc::RLIMIT_NPROC),
        ("nofile", libc::RLIMIT_NOFILE),
        ("as", libc::RLIMIT_AS),
    ];
    let mut rlimits = Map::new();
    for (name, resource) in limits {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct it is given.
        if unsafe { libc::getrlimit(resource, &mut limit) } != 0 {
            continue;
        }
        let soft = if limit.rlim_cur == libc::RLIM_INFINITY {
            Value::from(-1)
        } else {
            Value::from(limit.rlim_cur)
        };
        rlimits.insert(name.into(), soft);
    }
    rlimits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::flux_options;

    fn request<'a>(resources: &'a ResourceRequest, options: &'a JobOptions) -> JobRequest<'a> {
        let mut environment = Map::new();
        environment.insert("PMP_WORKER_ID".into(), "7".into());
        let mut rlimits = Map::new();
        rlimits.insert("core".into(), 0.into());
        JobRequest {
            resources,
            command: vec!["/venv/bin/pmp-worker".into()],
            cwd: "/data/run".into(),
            environment,
            options,
            rlimits,
            nodes: None,
            exclusive: false,
        }
    }

    #[test]
    fn ranks_threads_and_gpus_are_what_flux_run_n_c_g_asks_for() {
        // `flux run --dry-run --job-name=pmp-worker -n 2 -c 3 -g 1` (0.88.0).
        let resources = ResourceRequest {
            cores: 2,
            threads_per_core: 3,
            gpus_per_core: 1,
            ..Default::default()
        };
        let options = JobOptions::default();
        assert_eq!(
            jobspec(&request(&resources, &options)),
            json!({
                "resources": [{
                    "type": "slot",
                    "count": 2,
                    "with": [{"type": "core", "count": 3}, {"type": "gpu", "count": 1}],
                    "label": "task",
                }],
                "tasks": [{
                    "command": ["/venv/bin/pmp-worker"],
                    "slot": "task",
                    "count": {"per_slot": 1},
                }],
                "attributes": {"system": {
                    "duration": 0,
                    "environment": {"PMP_WORKER_ID": "7"},
                    "cwd": "/data/run",
                    "job": {"name": "pmp-worker"},
                    "shell": {"options": {"rlimit": {"core": 0}}},
                }},
                "version": 1,
            })
        );
    }

    #[test]
    fn nodes_and_exclusive_are_what_flux_run_n_and_exclusive_ask_for() {
        // `flux run --dry-run -N 2 -n 3 --exclusive` (0.88.0), as
        // `JobspecV1.from_command(num_tasks=3, num_nodes=2, exclusive=True)`.
        let resources = ResourceRequest {
            cores: 3,
            ..Default::default()
        };
        let options = JobOptions::default();
        let spec = jobspec(&JobRequest {
            nodes: Some(2),
            exclusive: true,
            ..request(&resources, &options)
        });
        assert_eq!(
            spec["resources"],
            json!([{
                "type": "node",
                "count": 2,
                "exclusive": true,
                "with": [{
                    "type": "slot",
                    "count": 2,
                    "with": [{"type": "core", "count": 1}],
                    "label": "task",
                }],
            }])
        );
        assert_eq!(spec["tasks"][0]["count"], json!({"total": 3}));
        let even = ResourceRequest {
            cores: 4,
            ..Default::default()
        };
        let spec = jobspec(&JobRequest {
            nodes: Some(2),
            ..request(&even, &options)
        });
        assert_eq!(spec["resources"][0]["with"][0]["count"], 2);
        assert_eq!(spec["resources"][0].get("exclusive"), None);
        assert_eq!(spec["tasks"][0]["count"], json!({"per_slot": 1}));
    }

    #[test]
    fn no_gpus_no_gpu_resource() {
        let resources = ResourceRequest::default();
        let options = JobOptions::default();
        let spec = jobspec(&request(&resources, &options));
        assert_eq!(
            spec["resources"][0]["with"],
            json!([{"type": "core", "count": 1}])
        );
        assert_eq!(spec["resources"][0]["count"], 1);
    }

    #[test]
    fn options_add_shell_options_and_rename_the_job() {
        let resources = ResourceRequest::default();
        let options = flux_options::parse(&[
            "-o".to_string(),
            "pmi=simple".to_string(),
            "--setopt=rlimit.nofile=64".to_string(),
            "--job-name=mine".to_string(),
        ])
        .unwrap();
        let spec = jobspec(&request(&resources, &options));
        let system = &spec["attributes"]["system"];
        assert_eq!(system["job"]["name"], "mine");
        assert_eq!(
            system["shell"]["options"],
            json!({"pmi": "simple", "rlimit": {"core": 0, "nofile": 64}})
        );
    }

    #[test]
    fn the_open_files_limit_is_passed_on() {
        let rlimits = current_rlimits();
        assert!(rlimits["nofile"].as_i64().unwrap() > 0, "{rlimits:?}");
        assert!(!rlimits.contains_key("memlock"));
    }
}
