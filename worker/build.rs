// Embed the path of libpython so the worker finds a pyenv/conda/venv Python
// without LD_LIBRARY_PATH.
fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
}
