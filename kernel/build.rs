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
}
