//! The app the agent serves, and how its end is seen.
//!
//! **Run as the agent's child**, the app is started through the agent's own binary in a guard
//! mode ([`GUARD`]): the guard asks the kernel for a signal when its parent dies
//! (`PR_SET_PDEATHSIG`), checks that the parent is still the agent, and then becomes the app
//! with `execvp`. The setting survives the exec, so an agent killed with SIGKILL (or by the OOM
//! killer) never leaves its app running unregistered and unwatched: the app gets its drain
//! signal, drains as if asked, and its clients reconnect elsewhere. This needs no `unsafe`
//! (no `pre_exec` hook): the guard sets the signal on itself. The guard is `/proc/self/exe`, so
//! it is this very binary even after a package upgrade replaced the file on disk.
//!
//! The kernel ties the death signal to the *thread* that forked the child, not the process:
//! the agent spawns on its main thread (the future given to `block_on`), which lives as long
//! as the process does.
//!
//! **Attached to a running process** (`--pid`), the app is not the agent's child and its exit
//! status is not the agent's to know: its end is seen by reading `/proc/<pid>/stat`, whose
//! start time guards against the pid being reused by another process.

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::process::ExitStatus;
use std::time::Duration;
use tokio::process::Child;

/// The first argument that makes `ebb-agent` the guard of an app instead of an agent.
pub const GUARD: &str = "__ebb-agent-guard";
/// How often an attached process is looked at.
const ATTACHED_POLL: Duration = Duration::from_millis(100);
/// The guard's exit code when it cannot become the app (as a shell's "command not found").
const GUARD_FAILED: i32 = 127;

/// The process the agent registers.
pub enum App {
    /// Started by the agent; reaped by it.
    Child(Child),
    /// Started by someone else; `started` is its start time (clock ticks after boot).
    Attached { pid: Pid, started: u64 },
}

/// How the app ended.
#[derive(Debug)]
pub enum Ended {
    /// The child's status.
    Status(ExitStatus),
    /// An attached process is gone (its status belongs to its parent).
    Gone,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Status(status) => status.fmt(f),
            Ended::Gone => f.write_str("the attached process is gone"),
        }
    }
}

impl Ended {
    /// The agent's exit code: the child's (128 + signal when a signal ended it); for an
    /// attached process, 0 when it was drained and 1 when it ended on its own.
    pub fn code(&self, drained: bool) -> u8 {
        use std::os::unix::process::ExitStatusExt;
        match self {
            Ended::Status(status) => match (status.code(), status.signal()) {
                (Some(code), _) => u8::try_from(code).unwrap_or(1),
                (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(1),
                _ => 1,
            },
            Ended::Gone => u8::from(!drained),
        }
    }
}

impl App {
    /// Starts `command` under the guard: it gets `death_signal` if the agent dies first.
    pub fn spawn(command: &[String], death_signal: Signal) -> anyhow::Result<App> {
        let child = tokio::process::Command::new("/proc/self/exe")
            .arg(GUARD)
            .arg((death_signal as i32).to_string())
            .arg(std::process::id().to_string())
            .args(command)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {:?}: {e}", command[0]))?;
        Ok(App::Child(child))
    }

    /// Attaches to the running process `pid`, which the agent must be allowed to signal.
    pub fn attach(pid: i32) -> anyhow::Result<App> {
        let pid = Pid::from_raw(pid);
        if pid == nix::unistd::getpid() {
            anyhow::bail!("--pid {pid} is the agent itself");
        }
        let started =
            start_time(pid).ok_or_else(|| anyhow::anyhow!("--pid {pid}: no such process"))?;
        nix::sys::signal::kill(pid, None)
            .map_err(|e| anyhow::anyhow!("--pid {pid}: cannot signal it: {e}"))?;
        Ok(App::Attached { pid, started })
    }

    pub fn pid(&self) -> Pid {
        match self {
            App::Child(child) => Pid::from_raw(child.id().map_or(0, |id| id as i32)),
            App::Attached { pid, .. } => *pid,
        }
    }

    /// How it ended, if it has.
    pub fn try_ended(&mut self) -> std::io::Result<Option<Ended>> {
        match self {
            App::Child(child) => Ok(child.try_wait()?.map(Ended::Status)),
            App::Attached { pid, started } => {
                Ok((start_time(*pid) != Some(*started)).then_some(Ended::Gone))
            }
        }
    }

    /// Waits for its end (cancel-safe).
    pub async fn ended(&mut self) -> std::io::Result<Ended> {
        match self {
            App::Child(child) => child.wait().await.map(Ended::Status),
            App::Attached { .. } => loop {
                if let Some(ended) = self.try_ended()? {
                    return Ok(ended);
                }
                tokio::time::sleep(ATTACHED_POLL).await;
            },
        }
    }

    /// Stops a child that never became healthy; an attached process is left alone.
    pub async fn stop(&mut self) {
        if let App::Child(child) = self {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

/// The start time of a live process (a zombie is not live), from `/proc/<pid>/stat`.
fn start_time(pid: Pid) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ...`: comm may hold spaces and parentheses; the fields follow the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    // Field 22 of the whole line is the 20th after the comm.
    fields.get(19)?.parse().ok()
}

/// The guard's arguments after [`GUARD`], if this process was started as one.
pub fn guard_requested() -> Option<Vec<OsString>> {
    let mut args = std::env::args_os().skip(1);
    (args.next()? == GUARD).then(|| args.collect())
}

/// In the guard: `<signal> <agent pid> <command...>`. Arms the death signal, then becomes the
/// command; never returns.
pub fn guard(args: Vec<OsString>) -> ! {
    let fail = |why: String| -> ! {
        eprintln!("ebb-agent: {why}");
        std::process::exit(GUARD_FAILED)
    };
    let [signal, parent, command @ ..] = args.as_slice() else {
        fail("the app guard needs a signal, a parent pid and a command".into())
    };
    let number = |s: &OsString| s.to_str().and_then(|s| s.parse::<i32>().ok());
    let signal = number(signal)
        .and_then(|n| Signal::try_from(n).ok())
        .unwrap_or_else(|| fail(format!("the app guard got a bad signal {signal:?}")));
    let parent = number(parent)
        .map(Pid::from_raw)
        .unwrap_or_else(|| fail(format!("the app guard got a bad parent {parent:?}")));
    if let Err(e) = nix::sys::prctl::set_pdeathsig(signal) {
        fail(format!("cannot tie the app to the agent: {e}"));
    }
    // The agent may have died before the signal was armed: then nobody would send it.
    if nix::unistd::getppid() != parent {
        fail("the agent exited before its app started".into());
    }
    let argv: Vec<CString> = command
        .iter()
        .map(|a| CString::new(a.as_bytes()).expect("arguments hold no NUL"))
        .collect();
    let Some(program) = argv.first() else {
        fail("the app guard got no command".into())
    };
    let e = nix::unistd::execvp(program, &argv).unwrap_err();
    fail(format!("cannot start {:?}: {e}", command[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_process_has_a_start_time_and_an_exit_status_maps_to_a_code() {
        assert!(start_time(nix::unistd::getpid()).is_some());
        assert_eq!(start_time(Pid::from_raw(i32::MAX)), None);
        assert_eq!(Ended::Gone.code(true), 0);
        assert_eq!(Ended::Gone.code(false), 1);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(Ended::Status(ExitStatus::from_raw(3 << 8)).code(false), 3);
        assert_eq!(Ended::Status(ExitStatus::from_raw(15)).code(true), 143);
    }
}
