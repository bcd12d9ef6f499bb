// Embed the path of libpython so the kernel finds a pyenv/conda/venv Python
// without LD_LIBRARY_PATH, and record which Python it was built for: the
// version it must check at start-up and the default interpreter for
// `pmp-kernel install`.
fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
    let config = pyo3_build_config::get();
    let version = config.version();
    println!(
        "cargo:rustc-env=PMP_PYTHON_VERSION={}.{}",
        version.major, version.minor
    );
    println!(
        "cargo:rustc-env=PMP_BUILD_PYTHON={}",
        config.executable().unwrap_or("")
    );
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    precompile(config.executable());
}

/// The IPython wiring's modules (`python/_pmp_kernel/`, see
/// `src/python/bootstrap.rs`), compiled to bytecode by the Python the kernel
/// links against: a start loads them instead of compiling their source,
/// about 7 ms of every start. Each `<name>.pyc` in OUT_DIR holds that
/// Python's magic number and the marshalled code; an empty file (no Python
/// to run here, or it failed) makes the kernel compile the source as before.
fn precompile(executable: Option<&str>) {
    const MODULES: &[&str] = &[
        "jsonutil",
        "info",
        "plaintext",
        "transform",
        "display",
        "shell",
        "comms",
        "stdin",
        "magics",
        "kernel",
        "__init__",
    ];
    // Compiled under the names `bootstrap::exec_module` gives them.
    const SCRIPT: &str = r#"
import importlib.util, marshal, sys
out = sys.argv[1]
for name in sys.argv[2:]:
    module = "_pmp_kernel" if name == "__init__" else "_pmp_kernel." + name
    with open("python/_pmp_kernel/" + name + ".py", encoding="utf-8") as source:
        code = compile(source.read(), "<pmp-kernel>/" + module.replace(".", "/") + ".py", "exec")
    with open(out + "/" + name + ".pyc", "wb") as target:
        target.write(importlib.util.MAGIC_NUMBER + marshal.dumps(code))
"#;
    println!("cargo:rerun-if-changed=python/_pmp_kernel");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    for name in MODULES {
        std::fs::write(format!("{out}/{name}.pyc"), b"").expect("OUT_DIR is writable");
    }
    let Some(python) = executable else {
        return;
    };
    let compiled = std::process::Command::new(python)
        .args(["-c", SCRIPT, &out])
        .args(MODULES)
        .status();
    if !matches!(compiled, Ok(status) if status.success()) {
        println!("cargo:warning=pmp-kernel: could not precompile its Python modules with {python}; they compile at each start");
        for name in MODULES {
            let _ = std::fs::write(format!("{out}/{name}.pyc"), b"");
        }
    }
}
