//! Processes the cells started: descendants of the kernel still in its
//! process group (a child that made its own session, like a pty for `!cmd`,
//! is left to whoever made it). As with ipykernel, a shutdown terminates
//! them, so nothing outlives the kernel.

use std::time::{Duration, Instant};

/// (pid, parent pid, process group) of every live process, from /proc.
#[cfg(target_os = "linux")]
fn processes() -> Vec<(i32, i32, i32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // "pid (comm) state ppid pgrp ...": comm may contain spaces or ')'.
            let mut fields = stat.get(stat.rfind(')')? + 2..)?.split(' ');
            // A zombie has exited already; it only waits to be reaped.
            if fields.next()? == "Z" {
                return None;
            }
            let ppid = fields.next()?.parse().ok()?;
            let pgrp = fields.next()?.parse().ok()?;
            Some((pid, ppid, pgrp))
        })
        .collect()
}

/// (pid, parent pid, process group) of every live process, from `ps`
/// where there is no /proc (macOS); zombies left out as above.
#[cfg(not(target_os = "linux"))]
fn processes() -> Vec<(i32, i32, i32)> {
    let Ok(listed) = std::process::Command::new("ps")
        .args([
            "-A", "-o", "pid=", "-o", "ppid=", "-o", "pgid=", "-o", "stat=",
        ])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let pid = fields.next()?.parse().ok()?;
            let ppid = fields.next()?.parse().ok()?;
            let pgrp = fields.next()?.parse().ok()?;
            if fields.next()?.starts_with('Z') {
                return None;
            }
            Some((pid, ppid, pgrp))
        })
        .collect()
}

/// Descendants of this process that share its process group.
pub fn in_our_group() -> Vec<i32> {
    // SAFETY: getpid/getpgrp cannot fail.
    let (me, group) = unsafe { (libc::getpid(), libc::getpgrp()) };
    let all = processes();
    let mut descendants = vec![me];
    let mut i = 0;
    while i < descendants.len() {
        let parent = descendants[i];
        descendants.extend(
            all.iter()
                .filter(|(pid, ppid, _)| *ppid == parent && !descendants.contains(pid))
                .map(|(pid, _, _)| *pid)
                .collect::<Vec<_>>(),
        );
        i += 1;
    }
    all.iter()
        .filter(|(pid, _, pgrp)| *pid != me && *pgrp == group && descendants.contains(pid))
        .map(|(pid, _, _)| *pid)
        .collect()
}

fn signal_all(signal: libc::c_int) {
    for pid in in_our_group() {
        // SAFETY: kill has no memory effects; a vanished pid only errors.
        unsafe { libc::kill(pid, signal) };
    }
}

/// SIGTERM, then SIGKILL, to every process the kernel's cells left behind.
pub async fn terminate_all() {
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut delay = Duration::from_millis(10);
        loop {
            if in_our_group().is_empty() {
                return;
            }
            signal_all(signal);
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 3).min(Duration::from_millis(200));
        }
    }
}
