use super::*;
use std::collections::HashMap;
use std::process::Command;

/// What the test Slurm's `scontrol show job -d` printed for `salloc -N 2
/// --gpus-per-node=2` (the lines around the per-node one kept).
const TWO_NODES_TWO_GPUS_EACH: &str = "\
JobId=3648 JobName=interactive
   NodeList=node[1-2]
   BatchHost=node1
   NumNodes=2 NumCPUs=2 NumTasks=2 CPUs/Task=1 ReqB:S:C:T=0:0:*:*
   JOB_GRES=gpu:4
     Nodes=node[1-2] CPU_IDs=0 Mem=0 GRES=gpu:2(IDX:0-1)
   MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0
";

/// ... for `salloc -N 2 -n 5`: no GPUs, a line per node.
const FIVE_TASKS_NO_GPUS: &str = "\
   NodeList=node[1-2]
   NumNodes=2 NumCPUs=5 NumTasks=5 CPUs/Task=1 ReqB:S:C:T=0:0:*:*
   JOB_GRES=(null)
     Nodes=node1 CPU_IDs=0-3 Mem=0 GRES=
     Nodes=node2 CPU_IDs=0 Mem=0 GRES=
";

fn environment(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

fn node(name: &str, cpus: u32, gpus: u32) -> Node {
    Node {
        name: name.into(),
        cpus,
        gpus: Gpus::Counted(gpus),
        memory_mb: None,
    }
}

#[test]
fn slurm_nodes_have_the_jobs_cpus_and_gpus_each() {
    let var = environment(&[
        ("SLURM_JOB_NODELIST", "node[1-2]"),
        ("SLURM_JOB_CPUS_PER_NODE", "4(x2)"),
    ]);
    assert_eq!(
        slurm_nodes(&var, Some(TWO_NODES_TWO_GPUS_EACH)).unwrap(),
        [node("node1", 4, 2), node("node2", 4, 2)]
    );
    let var = environment(&[
        ("SLURM_JOB_NODELIST", "node[1-2]"),
        ("SLURM_JOB_CPUS_PER_NODE", "4,1"),
    ]);
    assert_eq!(
        slurm_nodes(&var, Some(FIVE_TASKS_NO_GPUS)).unwrap(),
        [node("node1", 4, 0), node("node2", 1, 0)]
    );
    assert_eq!(
        slurm_nodes(&var, None).unwrap(),
        [node("node1", 4, 0), node("node2", 1, 0)],
        "no detail: no GPUs known"
    );
}

#[test]
fn cpus_per_node_repeat_where_slurm_says_x() {
    assert_eq!(cpus_per_node("4(x2),2"), Some(vec![4, 4, 2]));
    assert_eq!(cpus_per_node("36"), Some(vec![36]));
    for bad in ["", "4(x2", "4(x0)", "four", "4(y2)", "4,,2", "-1"] {
        assert_eq!(cpus_per_node(bad), None, "{bad}");
    }
}

#[test]
fn gpus_are_counted_whatever_their_type_and_other_gres_are_not() {
    assert_eq!(gpu_count("gpu:2(IDX:0-1)"), Some(2));
    assert_eq!(gpu_count("gpu:a100:2(IDX:0-1)"), Some(2));
    assert_eq!(gpu_count("gpu:a100:1(IDX:0),gpu:v100:2(IDX:1,3)"), Some(3));
    assert_eq!(
        gpu_count("gpu(IDX:0,2-3)"),
        Some(3),
        "no count: the devices"
    );
    assert_eq!(gpu_count("mps:100(0),shard:2(IDX:0)"), Some(0));
    assert_eq!(gpu_count(""), Some(0));
    assert_eq!(gpu_count("gpu:a100"), None);
    assert_eq!(gpu_count("gpu:a100(IDX:x)"), None);
}

#[test]
fn several_kinds_of_gpu_on_several_lines_go_to_their_own_nodes() {
    let detail = "\
     Nodes=gpu[01-02] CPU_IDs=0-7 Mem=0 GRES=gpu:a100:4(IDX:0-3)
     Nodes=cpu07 CPU_IDs=0-1 Mem=0
     Nodes=gpu03 CPU_IDs=0-7 Mem=0 GRES=gpu:v100:1(IDX:0),gpu:a100:1(IDX:1)
";
    let var = environment(&[
        ("SLURM_JOB_NODELIST", "cpu07,gpu[01-03]"),
        ("SLURM_JOB_CPUS_PER_NODE", "2,8(x3)"),
    ]);
    assert_eq!(
        slurm_nodes(&var, Some(detail)).unwrap(),
        [
            node("cpu07", 2, 0),
            node("gpu01", 8, 4),
            node("gpu02", 8, 4),
            node("gpu03", 8, 2)
        ]
    );
}

#[test]
fn a_missing_or_malformed_variable_is_named_with_what_was_expected() {
    let cases = [
        (
            vec![("SLURM_JOB_CPUS_PER_NODE", "4")],
            None,
            vec!["SLURM_JOB_NODELIST is not set"],
        ),
        (
            vec![("SLURM_JOB_NODELIST", "node1")],
            None,
            vec!["SLURM_JOB_CPUS_PER_NODE is not set"],
        ),
        (
            vec![
                ("SLURM_JOB_NODELIST", "node[2-1]"),
                ("SLURM_JOB_CPUS_PER_NODE", "4"),
            ],
            None,
            vec![
                "SLURM_JOB_NODELIST=\"node[2-1]\"",
                "goes down",
                "node[1-2,05]",
            ],
        ),
        (
            vec![("SLURM_JOB_NODELIST", ""), ("SLURM_JOB_CPUS_PER_NODE", "4")],
            None,
            vec!["names no node"],
        ),
        (
            vec![
                ("SLURM_JOB_NODELIST", "node1"),
                ("SLURM_JOB_CPUS_PER_NODE", "4(x)"),
            ],
            None,
            vec!["SLURM_JOB_CPUS_PER_NODE=\"4(x)\"", "such as 4(x2),2"],
        ),
        (
            vec![
                ("SLURM_JOB_NODELIST", "node[1-3]"),
                ("SLURM_JOB_CPUS_PER_NODE", "4(x2)"),
            ],
            None,
            vec!["counts 2 node(s)", "names 3"],
        ),
        (
            vec![
                ("SLURM_JOB_NODELIST", "node[1-2]"),
                ("SLURM_JOB_CPUS_PER_NODE", "4(x2)"),
            ],
            Some("     Nodes=node1 CPU_IDs=0 Mem=0 GRES=gpu:1(IDX:0)\n"),
            vec!["no line `Nodes=... GRES=...` for node node2"],
        ),
        (
            vec![
                ("SLURM_JOB_NODELIST", "node1"),
                ("SLURM_JOB_CPUS_PER_NODE", "4"),
            ],
            Some(TWO_NODES_TWO_GPUS_EACH),
            vec!["names node node2", "another job"],
        ),
        (
            vec![
                ("SLURM_JOB_NODELIST", "node1"),
                ("SLURM_JOB_CPUS_PER_NODE", "4"),
            ],
            Some("     Nodes=node1 CPU_IDs=0 Mem=0 GRES=gpu:many\n"),
            vec!["GRES=\"gpu:many\"", "gpu:2(IDX:0-1)"],
        ),
    ];
    for (variables, detail, words) in cases {
        let error = slurm_nodes(environment(&variables), detail).unwrap_err();
        for word in words {
            assert!(error.contains(word), "{variables:?}: {error}");
        }
    }
}

#[test]
fn flux_nodes_are_the_ranks_of_the_resource_set_in_order() {
    // As `flux start -s 2` printed it on one host: two ranks, one host
    // name, told apart by rank.
    let one_host = r#"{"version": 1, "execution": {"R_lite": [{"rank": "0-1", "children": {"core": "0-1"}}], "starttime": 0.0, "expiration": 0.0, "nodelist": ["vm,vm"]}}"#;
    assert_eq!(
        flux_nodes(one_host).unwrap(),
        [node("vm#0", 2, 0), node("vm#1", 2, 0)]
    );
    // Only a name that repeats gets its rank.
    let some_shared = r#"{"version": 1, "execution": {"R_lite": [{"rank": "0-2", "children": {"core": "0"}}], "nodelist": ["a,b,b"]}}"#;
    assert_eq!(
        flux_nodes(some_shared).unwrap(),
        [node("a", 1, 0), node("b#1", 1, 0), node("b#2", 1, 0)]
    );
    // As `flux R encode` and `flux R append` print mixed nodes.
    let mixed = r#"{"version": 1, "execution": {"R_lite": [{"rank": "1", "children": {"core": "0-1"}}, {"rank": "0", "children": {"core": "0-3", "gpu": "0-1"}}], "starttime": 0.0, "expiration": 0.0, "nodelist": ["a1,b2"]}}"#;
    assert_eq!(
        flux_nodes(mixed).unwrap(),
        [node("a1", 4, 2), node("b2", 2, 0)]
    );
    let padded = r#"{"version": 1, "execution": {"R_lite": [{"rank": "0-2", "children": {"core": "0-3"}}], "nodelist": ["gpu[07-08]", "x"]}}"#;
    assert_eq!(
        flux_nodes(padded).unwrap(),
        [node("gpu07", 4, 0), node("gpu08", 4, 0), node("x", 4, 0)]
    );
}

#[test]
fn a_resource_set_pmp_cannot_read_says_why() {
    for (text, why) in [
        ("flux-resource: error", "not JSON"),
        (r#"{"version": 2}"#, "version 2"),
        (r#"{"version": 1, "execution": {}}"#, "no R_lite"),
        (
            r#"{"version": 1, "execution": {"R_lite": [{"rank": "0-1", "children": {"core": "0"}}], "nodelist": ["a"]}}"#,
            "1 host name(s) for 2 rank(s)",
        ),
        (
            r#"{"version": 1, "execution": {"R_lite": [{"rank": "0", "children": {"core": "3-1"}}], "nodelist": ["a"]}}"#,
            "not a set of ids",
        ),
    ] {
        let error = flux_nodes(text).unwrap_err();
        assert!(error.contains(why), "{text}: {error}");
        assert!(error.starts_with("flux resource R printed"), "{error}");
    }
}

#[test]
fn the_local_backend_has_no_allocation_to_discover() {
    let error = discover(&BackendChoice::Local).unwrap_err();
    assert!(error.contains("only the slurm backend"), "{error}");
}

/// `program` when it is on PATH, else None (the test then has nothing to
/// check against: Slurm and Flux are where CI installs them).
fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

#[test]
fn host_lists_expand_as_scontrol_expands_them() {
    let Some(scontrol) = on_path("scontrol") else {
        eprintln!("scontrol is not on PATH: nothing to compare with");
        return;
    };
    let lists = [
        "node[1-2,05-07],gpu01",
        "r[1-2]n[01-02]",
        "n[001-10]",
        "n[8-10]",
        "n[09-11]",
        "n1,,n2",
        "x[1-2],x1",
        "n[1,1]",
        "n[01-1]",
        "n[1-01]",
        "n[0-0]",
        "[1-2]",
        "a,b[1-2]",
        "n[1-2]x[3-4],q",
        "n[3-1]",
        "n[a-b]",
        "n[]",
        "n[010-8]",
    ];
    for list in lists {
        let said = Command::new(&scontrol)
            .args(["show", "hostnames", list])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&said.stdout);
        let stderr = String::from_utf8_lossy(&said.stderr);
        // scontrol says a bad list and still exits 0.
        if stdout.contains("Invalid hostlist") || stderr.contains("Invalid hostlist") {
            assert!(expand(list).is_err(), "scontrol refuses {list}: {stderr}");
        } else {
            let names: Vec<&str> = stdout.lines().collect();
            assert_eq!(expand(list).unwrap(), names, "{list}");
        }
    }
}

fn expand(list: &str) -> Result<Vec<String>, String> {
    hostlist::expand(list)
}

/// Run inside an allocation by the tests below (they start this test
/// binary there): prints what `discover` finds, one JSON line.
#[test]
#[ignore = "run inside salloc or flux start by the tests that discover nodes"]
fn print_the_discovered_nodes() {
    let choice = match std::env::var("PMP_TEST_DISCOVER").as_deref() {
        Ok("slurm") => BackendChoice::Slurm {
            srun: on_path("srun").unwrap(),
        },
        Ok("flux") => BackendChoice::Flux {
            flux: on_path("flux").unwrap(),
        },
        other => panic!("PMP_TEST_DISCOVER is {other:?}, not slurm or flux"),
    };
    let nodes: Vec<(String, u32, u32)> = discover(&choice)
        .unwrap()
        .into_iter()
        .map(|node| (node.name, node.cpus, node.gpus.count()))
        .collect();
    println!("NODES {}", serde_json::to_string(&nodes).unwrap());
}

/// What `print_the_discovered_nodes` found, run by `launch` (salloc or
/// flux start, followed by this test binary).
fn discovered_by(backend: &str, launch: &mut Command) -> Vec<(String, u32, u32)> {
    let output = launch
        .arg(std::env::current_exe().unwrap())
        .args([
            "backend::allocation_nodes::tests::print_the_discovered_nodes",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env("PMP_TEST_DISCOVER", backend)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix("NODES "))
        .unwrap_or_else(|| panic!("no NODES line: {stdout}\n{stderr}"));
    serde_json::from_str(line).unwrap()
}

#[test]
fn discover_finds_the_nodes_of_a_real_slurm_allocation() {
    let (Some(salloc), Some(sinfo)) = (on_path("salloc"), on_path("sinfo")) else {
        eprintln!("salloc is not on PATH: no Slurm to allocate from");
        return;
    };
    let partition = Command::new(sinfo)
        .args(["-h", "-N", "-o", "%N"])
        .output()
        .unwrap();
    let cluster_nodes: Vec<String> = String::from_utf8_lossy(&partition.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    for (gres, gpus) in [(&["--gres=gpu:1"][..], 1), (&[][..], 0)] {
        let nodes = discovered_by(
            "slurm",
            Command::new(&salloc)
                .args(["-N", "2", "--ntasks-per-node=2"])
                .args(gres),
        );
        assert_eq!(nodes.len(), 2, "{nodes:?}");
        assert_ne!(nodes[0].0, nodes[1].0);
        for (name, cpus, node_gpus) in &nodes {
            assert!(cluster_nodes.contains(name), "{name} of {cluster_nodes:?}");
            assert_eq!((*cpus, *node_gpus), (2, gpus), "{gres:?}: {nodes:?}");
        }
    }
}

#[test]
fn discover_finds_the_ranks_of_a_real_flux_instance() {
    let Some(flux) = on_path("flux") else {
        eprintln!("flux is not on PATH: no Flux instance to start");
        return;
    };
    // The instance's resources as configured (two nodes of four cores and
    // two GPUs), not probed: this machine has no GPU.
    let dir = std::env::temp_dir().join(format!("pmp-flux-nodes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let encoded = Command::new(&flux)
        .args(["R", "encode", "-r", "0-1", "-c", "0-3", "-g", "0-1", "-H"])
        .arg("fake[1-2]")
        .output()
        .unwrap();
    assert!(encoded.status.success());
    std::fs::write(dir.join("R.json"), &encoded.stdout).unwrap();
    std::fs::write(
        dir.join("resource.toml"),
        format!(
            "[resource]\npath = \"{}\"\nnoverify = true\n",
            dir.join("R.json").display()
        ),
    )
    .unwrap();
    let nodes = discovered_by(
        "flux",
        Command::new(&flux)
            .args(["start", "-s", "2"])
            .arg(format!("--config-path={}", dir.display())),
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        nodes,
        [("fake1".to_string(), 4, 2), ("fake2".to_string(), 4, 2)]
    );
}

#[test]
fn without_the_jobs_variables_the_nodes_and_cpus_come_from_scontrols_detail() {
    // A kernel given only SLURM_JOB_ID (`salloc --no-shell`, then the id).
    let only_the_id = environment(&[("SLURM_JOB_ID", "3648")]);
    assert_eq!(
        slurm_nodes(&only_the_id, Some(FIVE_TASKS_NO_GPUS)).unwrap(),
        vec![node("node1", 4, 0), node("node2", 1, 0)]
    );
    assert_eq!(
        slurm_nodes(&only_the_id, Some(TWO_NODES_TWO_GPUS_EACH)).unwrap(),
        vec![node("node1", 1, 2), node("node2", 1, 2)]
    );
    let error = slurm_nodes(&only_the_id, None).unwrap_err();
    assert!(error.contains("SLURM_JOB_NODELIST is not set"), "{error}");
    assert_eq!(cpu_id_count("0-3,6"), Some(5));
    assert_eq!(cpu_id_count("3-1"), None);
}
