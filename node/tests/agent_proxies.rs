//! The agent's device proxy set with real `singularity-device-proxy` processes: proxies start
//! only when a device is first needed, carry the agent's work-directory marker (so a restarted
//! agent finds them after a `kill -9`), start again after dying, and bad settings get clear
//! errors. Every wait is bounded in count.

use singularity_node::agent::{Launcher, ProxySet, WORK_DIR_VAR};
use std::collections::BTreeMap;
use std::time::Duration;

const PROXY: &str = env!("CARGO_BIN_EXE_singularity-device-proxy");
const RESTART_POLLS: u32 = 1_000;

fn environ_has(pid: u32, var: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|v| v == var.as_bytes()))
        .unwrap_or(false)
}

fn set(dir: &std::path::Path, command: Option<&str>) -> ProxySet {
    ProxySet::new(
        command.map(|c| vec![c.to_string()]),
        dir,
        BTreeMap::from([(0, 64 << 20), (1, 32 << 20)]),
        Launcher::start().unwrap(),
    )
}

#[test]
fn proxies_start_on_demand_carry_the_marker_and_restart_after_dying() {
    let dir = tempfile::tempdir().unwrap();
    let set = set(dir.path(), Some(PROXY));
    assert!(set.pids().is_empty(), "nothing starts before it is needed");
    let socket = set.ensure(1).unwrap();
    assert_eq!(socket, set.socket_path(1));
    assert_eq!(set.pids().len(), 1, "only the device asked for");
    let stats = singularity_node::launcher::stats(&socket).unwrap();
    assert_eq!(stats.device_index, 1);
    let first = set.pids()[&1];
    let marker = format!("{WORK_DIR_VAR}={}", dir.path().display());
    assert!(environ_has(first, &marker), "the proxy carries {marker}");
    assert_eq!(set.ensure(1).unwrap(), socket);
    assert_eq!(set.pids()[&1], first, "started once");

    // SAFETY: kills the proxy this test started.
    unsafe {
        libc::kill(first as libc::pid_t, libc::SIGKILL);
    }
    let mut restarted = None;
    for _ in 0..RESTART_POLLS {
        set.ensure(1).unwrap();
        if set.pids()[&1] != first {
            restarted = Some(set.pids()[&1]);
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let restarted = restarted.expect("a dead proxy is started again on its next use");
    assert!(singularity_node::launcher::stats(&socket).is_ok());
    set.stop_all();
    assert!(set.pids().is_empty());
    assert!(!singularity_node::proxy::is_listening(&socket));
    assert!(!environ_has(restarted, &marker), "stopped proxies are gone");
}

#[test]
fn missing_command_unknown_devices_and_bad_programs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = set(dir.path(), None).ensure(0).unwrap_err().to_string();
    assert!(err.contains("without a device-proxy command"), "{err}");
    let err = set(dir.path(), Some(PROXY))
        .ensure(3)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("device 3 is not in this node's inventory"),
        "{err}"
    );
    let err = set(dir.path(), Some("/nonexistent/proxy"))
        .ensure(0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/proxy"), "{err}");
    // A program that exits at once: its output is quoted.
    let err = set(dir.path(), Some("/bin/false"))
        .ensure(0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("exited at start"), "{err}");
}
