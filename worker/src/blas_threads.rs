//! Each loaded threading library's thread count, set from this process's
//! variables: what a library loaded in the zygote (with one thread, see
//! `preload`) read from them when it was loaded in a fresh process. Found
//! the way threadpoolctl finds them: the libraries loaded, by name, and
//! their setters by symbol.

use std::collections::HashSet;
use std::ffi::{c_int, CStr, CString};

/// A library's setter, and the variables that would have set its count at
/// load, first found wins.
struct Setter {
    library: &'static str,
    symbols: &'static [&'static str],
    variables: &'static [&'static str],
}

const SETTERS: [Setter; 3] = [
    Setter {
        library: "openblas",
        // OpenBLAS's own builds, its 64-bit integer builds, and the builds
        // numpy and scipy ship (prefixed `scipy_`).
        symbols: &[
            "openblas_set_num_threads",
            "openblas_set_num_threads64_",
            "scipy_openblas_set_num_threads",
            "scipy_openblas_set_num_threads64_",
        ],
        variables: &["OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"],
    },
    Setter {
        library: "mkl",
        symbols: &["MKL_Set_Num_Threads"],
        variables: &["MKL_NUM_THREADS", "OMP_NUM_THREADS"],
    },
    Setter {
        // libgomp, libiomp5, LLVM's libomp.
        library: "omp",
        symbols: &["omp_set_num_threads"],
        variables: &["OMP_NUM_THREADS"],
    },
];

/// Set every loaded library's count; a library none of whose variables is
/// set gets what it takes by default, the CPUs this process may run on.
pub fn set_from_environment() {
    let mut called = HashSet::new();
    for path in loaded_libraries() {
        let file = path.rsplit('/').next().unwrap_or(&path);
        for setter in SETTERS.iter().filter(|s| file.contains(s.library)) {
            let Ok(name) = CString::new(path.as_str()) else {
                continue;
            };
            // SAFETY: RTLD_NOLOAD only returns a library already loaded.
            let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
            if handle.is_null() {
                continue;
            }
            let count = wanted(setter.variables);
            for symbol in setter.symbols {
                let symbol = CString::new(*symbol).expect("no NUL in a symbol name");
                // SAFETY: looking up a symbol in a live handle.
                let found = unsafe { libc::dlsym(handle, symbol.as_ptr()) };
                // One library's handle also finds its dependencies' symbols.
                if !found.is_null() && called.insert(found as usize) {
                    // SAFETY: each symbol listed is `void f(int)`.
                    let set: extern "C" fn(c_int) = unsafe { std::mem::transmute(found) };
                    set(count);
                }
            }
            // SAFETY: balances the dlopen above; the library stays loaded.
            unsafe { libc::dlclose(handle) };
        }
    }
}

/// The first of `variables` set to a positive count, or the CPUs this
/// process may run on.
fn wanted(variables: &[&str]) -> c_int {
    variables
        .iter()
        .find_map(|v| {
            std::env::var(v)
                .ok()?
                .trim()
                .parse::<c_int>()
                .ok()
                .filter(|n| *n > 0)
        })
        .unwrap_or_else(allowed_cpus)
}

fn allowed_cpus() -> c_int {
    // SAFETY: a zeroed cpu_set_t filled by sched_getaffinity.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return 1;
        }
        libc::CPU_COUNT(&set).max(1)
    }
}

/// The paths of the shared libraries loaded in this process.
fn loaded_libraries() -> Vec<String> {
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        paths: *mut libc::c_void,
    ) -> c_int {
        // SAFETY: called by dl_iterate_phdr with its info and our Vec.
        unsafe {
            let paths = &mut *paths.cast::<Vec<String>>();
            let name = (*info).dlpi_name;
            if !name.is_null() {
                let name = CStr::from_ptr(name).to_string_lossy();
                if !name.is_empty() {
                    paths.push(name.into_owned());
                }
            }
        }
        0
    }
    let mut paths: Vec<String> = Vec::new();
    // SAFETY: `each` only pushes into the Vec passed as its data.
    unsafe { libc::dl_iterate_phdr(Some(each), (&mut paths as *mut Vec<String>).cast()) };
    paths
}
