//! ebb binaries as child processes: their logs, signals and exit, and `ebb-node` in particular.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

/// Lines a process wrote, collected as they come so its pipes never fill.
#[derive(Debug, Default)]
struct Output {
    lines: Mutex<Vec<String>>,
    grew: Notify,
}

/// How to start a process.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Echo its stderr into the test output (nextest shows it for failing tests).
    pub echo_stderr: bool,
    /// Give it a stdin pipe, closed when the [`Proc`] is dropped.
    pub stdin: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            echo_stderr: true,
            stdin: false,
        }
    }
}

/// The stderr lines of a process, readable while it runs and after ([`Proc::log_handle`]).
#[derive(Debug, Clone)]
pub struct Logs(Arc<Output>);

impl Logs {
    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lines.lock().unwrap().clone()
    }
}

/// A running child process; killed when dropped.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    pid: Pid,
    stderr: Arc<Output>,
    stdout: Arc<Output>,
}

fn collect(stream: impl AsyncRead + Unpin + Send + 'static, output: Arc<Output>, echo: bool) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if echo {
                eprintln!("  | {line}");
            }
            output.lines.lock().unwrap().push(line);
            output.grew.notify_waiters();
        }
    });
}

async fn wait_line(output: &Output, needle: &str, limit: Duration) -> Option<String> {
    tokio::time::timeout(limit, async {
        loop {
            let grew = output.grew.notified();
            tokio::pin!(grew);
            // Registered before looking, so a line arriving meanwhile still wakes us.
            grew.as_mut().enable();
            if let Some(line) = output
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return line.clone();
            }
            grew.await;
        }
    })
    .await
    .ok()
}

impl Proc {
    /// Starts `program` with `args`; stdout and stderr are collected (stderr is also echoed to
    /// the test's output, which nextest shows for failing tests).
    pub fn spawn(program: &std::path::Path, args: &[String]) -> Proc {
        Proc::spawn_with(program, args, Options::default())
    }

    /// Starts `program` with `args` and `options`.
    pub fn spawn_with(program: &std::path::Path, args: &[String], options: Options) -> Proc {
        Proc::spawn_with_env(program, args, options, &[])
    }

    /// Starts `program` with `args`, `options` and the environment variables `env` added.
    pub fn spawn_with_env(
        program: &std::path::Path,
        args: &[String],
        options: Options,
        env: &[(&str, &str)],
    ) -> Proc {
        let mut child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .env("EBB_LOG", "info,ebb_node=debug")
            .env("NO_COLOR", "1")
            .stdin(if options.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let pid = Pid::from_raw(child.id().expect("a running child has a pid") as i32);
        let stderr = Arc::new(Output::default());
        let stdout = Arc::new(Output::default());
        collect(
            child.stderr.take().unwrap(),
            stderr.clone(),
            options.echo_stderr,
        );
        collect(child.stdout.take().unwrap(), stdout.clone(), false);
        Proc {
            child,
            pid,
            stderr,
            stdout,
        }
    }

    /// Waits for a stderr line containing `needle` and returns it.
    pub async fn wait_log(&self, needle: &str, limit: Duration) -> String {
        wait_line(&self.stderr, needle, limit)
            .await
            .unwrap_or_else(|| panic!("no log line with {needle:?} within {limit:?}"))
    }

    /// Waits for a stdout line containing `needle` and returns it.
    pub async fn wait_stdout(&self, needle: &str, limit: Duration) -> String {
        wait_line(&self.stdout, needle, limit)
            .await
            .unwrap_or_else(|| panic!("no output line with {needle:?} within {limit:?}"))
    }

    /// Every stderr line so far.
    pub fn logs(&self) -> Vec<String> {
        self.stderr.lines.lock().unwrap().clone()
    }

    /// A handle that reads this process's stderr lines, also after the process is gone.
    pub fn log_handle(&self) -> Logs {
        Logs(self.stderr.clone())
    }

    /// Every stdout line so far.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lines.lock().unwrap().clone()
    }

    /// Writes `line` and a newline to its stdin (started with [`Options::stdin`]).
    pub async fn write_line(&mut self, line: &str) {
        use tokio::io::AsyncWriteExt;
        let stdin = self
            .child
            .stdin
            .as_mut()
            .expect("started with a stdin pipe");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write to stdin");
    }

    /// Sends a signal.
    pub fn signal(&self, signal: Signal) {
        kill(self.pid, signal).unwrap_or_else(|e| panic!("kill {signal}: {e}"));
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// Waits for the exit, panicking after `limit`.
    pub async fn wait(&mut self, limit: Duration) -> ExitStatus {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the process did not exit within {limit:?}"))
            .expect("wait for the child")
    }

    /// Waits for the exit and for its output to be read to the end.
    pub async fn wait_with_output(&mut self, limit: Duration) -> (ExitStatus, Vec<String>) {
        let status = self.wait(limit).await;
        // The pipes close at exit; give the collectors a moment to read the last lines.
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        (status, self.stdout())
    }
}

/// A running `ebb-node`.
#[derive(Debug)]
pub struct Node {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Node {
    /// Starts `ebb-node --listen 127.0.0.1:0 <args>` (unless `args` has its own `--listen`) and
    /// waits until it is active.
    pub async fn start(args: &[&str]) -> Node {
        Node::start_on(None, args).await
    }

    /// Like [`Node::start`], after the bash commands `prelude` (e.g. `ulimit -n 256`) in a shell
    /// that then `exec`s the node, so the process (and its pid) is the node's, with whatever
    /// limits and descriptors the prelude gave it.
    pub async fn start_after(prelude: &str, args: &[&str]) -> Node {
        let mut all = vec![
            "-c".to_owned(),
            format!("{prelude}\nexec \"$0\" \"$@\""),
            crate::bin::path("ebb-node").display().to_string(),
        ];
        all.extend(Node::args(args));
        let proc = Proc::spawn(std::path::Path::new("bash"), &all);
        Node::active(proc).await
    }

    /// `args`, with `--listen 127.0.0.1:0` unless they have their own.
    fn args(args: &[&str]) -> Vec<String> {
        let mut all = Vec::new();
        if !args.contains(&"--listen") {
            all.extend(["--listen".to_owned(), "127.0.0.1:0".to_owned()]);
        }
        all.extend(args.iter().map(|a| a.to_string()));
        all
    }

    /// Waits until the node in `proc` is active and reads its address.
    async fn active(proc: Proc) -> Node {
        let line = proc.wait_log("node active", Duration::from_secs(10)).await;
        let addr = line
            .split_whitespace()
            .find_map(|word| word.strip_prefix("local_addr="))
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no local_addr in {line:?}"));
        Node { proc, addr }
    }

    /// Like [`Node::start`], pinned to CPU `cpu` when given (`taskset`, for benchmarks).
    pub async fn start_on(cpu: Option<usize>, args: &[&str]) -> Node {
        let all = Node::args(args);
        let proc = match cpu {
            None => Proc::spawn(&crate::bin::path("ebb-node"), &all),
            Some(cpu) => {
                let mut pinned = vec![
                    "-c".to_owned(),
                    cpu.to_string(),
                    crate::bin::path("ebb-node").display().to_string(),
                ];
                pinned.extend(all);
                Proc::spawn(std::path::Path::new("taskset"), &pinned)
            }
        };
        Node::active(proc).await
    }

    /// `ws://<addr>/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Sends a signal to the node.
    pub fn signal(&self, signal: Signal) {
        self.proc.signal(signal);
    }

    /// Reads `/metrics`.
    pub async fn metrics(&self) -> String {
        crate::http::get(self.addr, "/metrics").await.body
    }

    /// One metric sample (0 when absent).
    pub async fn metric(&self, sample: &str) -> f64 {
        crate::http::metric(&self.metrics().await, sample).unwrap_or(0.0)
    }
}
