//! A real headless Chromium, driven through the DevTools protocol: open a page, read its live
//! DOM with JavaScript, take a screenshot. For the status page of `ebb serve`
//! (`tests/tests/serve_page.rs`).
//!
//! The browser is Debian's `chromium` (`.ci/run` installs it), or whatever `EBB_CHROMIUM` names.
//! It runs as `chromium --headless=new --no-sandbox --disable-gpu --remote-debugging-port=0
//! --user-data-dir=<fresh temporary directory>` (`--no-sandbox`: the tests run as root), in a
//! process group of its own: [`Browser::close`] asks it to quit and waits (bounded), then kills
//! whatever of the group is left; dropping a [`Browser`] kills the group at once. Every call is
//! bounded by a timeout, so a hung browser fails the test instead of hanging it.

use futures_util::{SinkExt, StreamExt};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

/// The variable naming another Chromium binary.
pub const ENV: &str = "EBB_CHROMIUM";
/// The binary looked for on `PATH` (Debian's package of that name).
pub const DEFAULT_BINARY: &str = "chromium";
/// The window (and screenshot) size.
pub const WINDOW: (u32, u32) = (1200, 800);
/// Longest wait for the browser to start and open its DevTools port.
const START_WITHIN: Duration = Duration::from_secs(30);
/// Longest wait for the answer to one DevTools command.
const ANSWER_WITHIN: Duration = Duration::from_secs(20);
/// Longest wait for a page to load.
const LOAD_WITHIN: Duration = Duration::from_secs(30);
/// Longest wait for the browser to quit once asked.
const QUIT_WITHIN: Duration = Duration::from_secs(10);
/// Stderr lines kept, for the message of a failure.
const KEEP_LINES: usize = 200;

/// The Chromium binary: `$EBB_CHROMIUM`, or `chromium` on `PATH`. Panics, saying how to get it,
/// when there is none: a browser test never skips.
pub fn locate() -> PathBuf {
    if let Some(path) = std::env::var_os(ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{ENV}={} names no file; unset it to use `{DEFAULT_BINARY}` from PATH",
            path.display()
        );
        return path;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(DEFAULT_BINARY))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no `{DEFAULT_BINARY}` on PATH: the status-page tests run a real headless Chromium. \
                 `.ci/run` installs Debian's (apt-get install -y --no-install-recommends \
                 chromium); or set {ENV} to a Chromium or Chrome binary"
            )
        })
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A running headless Chromium and its DevTools connection.
#[derive(Debug)]
pub struct Browser {
    child: Child,
    group: Pid,
    profile: PathBuf,
    /// The browser-wide DevTools connection; commands for a page carry its session id.
    socket: tokio::sync::Mutex<Socket>,
    next_id: AtomicU64,
    stderr: Arc<Mutex<Vec<String>>>,
    /// `Browser.getVersion`'s `product`, e.g. `Chrome/131.0.6778.204`.
    pub version: String,
}

/// One open page: its DevTools session.
#[derive(Debug, Clone)]
pub struct Tab {
    session: String,
}

impl Browser {
    /// Starts the browser ([`locate`]) on `about:blank` and connects to it.
    pub async fn launch() -> Browser {
        let binary = locate();
        let profile = std::env::temp_dir().join(format!("ebb-chromium-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&profile).expect("a temporary profile directory");
        let mut child = Command::new(&binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-port=0",
                &format!("--user-data-dir={}", profile.display()),
                &format!("--window-size={},{}", WINDOW.0, WINDOW.1),
                "--hide-scrollbars",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-sync",
                "--disable-component-update",
                "--mute-audio",
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let group = Pid::from_raw(child.id().expect("a running child has a pid") as i32);
        let stderr = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn({
            let (stream, stderr) = (child.stderr.take().unwrap(), stderr.clone());
            async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut kept = stderr.lock().unwrap();
                    if kept.len() == KEEP_LINES {
                        kept.remove(0);
                    }
                    kept.push(line);
                }
            }
        });
        // Chromium writes the port it took, and the browser's WebSocket path, into this file.
        let port_file = profile.join("DevToolsActivePort");
        let deadline = tokio::time::Instant::now() + START_WITHIN;
        let endpoint = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && let Some((port, path)) = text.split_once('\n')
                && !path.trim().is_empty()
            {
                break format!("ws://127.0.0.1:{}{}", port.trim(), path.trim());
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{} exited ({status}) before opening its DevTools port:\n{}",
                    binary.display(),
                    stderr.lock().unwrap().join("\n")
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} opened no DevTools port within {START_WITHIN:?}:\n{}",
                binary.display(),
                stderr.lock().unwrap().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (socket, _) =
            tokio::time::timeout(ANSWER_WITHIN, tokio_tungstenite::connect_async(&endpoint))
                .await
                .unwrap_or_else(|_| panic!("connecting to {endpoint}: timed out"))
                .unwrap_or_else(|e| panic!("connecting to {endpoint}: {e}"));
        let mut browser = Browser {
            child,
            group,
            profile,
            socket: tokio::sync::Mutex::new(socket),
            next_id: AtomicU64::new(1),
            stderr,
            version: String::new(),
        };
        let version = browser.call(None, "Browser.getVersion", json!({})).await;
        browser.version = version["product"].as_str().unwrap_or("?").to_owned();
        browser
    }

    /// Sends one DevTools command (to the page of `tab`, or to the browser) and returns its
    /// result; panics on an error answer or after [`ANSWER_WITHIN`]. Events are ignored.
    pub async fn call(&self, tab: Option<&Tab>, method: &str, params: Value) -> Value {
        self.try_call(tab, method, params)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Browser::call`], with an error answer (e.g. a page navigating meanwhile) as `Err`. A
    /// lost connection or no answer within [`ANSWER_WITHIN`] still panics.
    pub async fn try_call(
        &self,
        tab: Option<&Tab>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(tab) = tab {
            command["sessionId"] = json!(tab.session);
        }
        let mut socket = self.socket.lock().await;
        let exchange = async {
            socket
                .send(Message::text(command.to_string()))
                .await
                .unwrap_or_else(|e| panic!("DevTools {method}: {e}"));
            loop {
                let message = socket
                    .next()
                    .await
                    .unwrap_or_else(|| {
                        panic!("DevTools {method}: the browser closed the connection")
                    })
                    .unwrap_or_else(|e| panic!("DevTools {method}: {e}"));
                let Message::Text(text) = message else {
                    continue;
                };
                let answer: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("DevTools {method}: {e}: {text}"));
                if answer["id"] != id {
                    continue;
                }
                if let Some(error) = answer.get("error") {
                    return Err(format!("DevTools {method} failed: {error}"));
                }
                return Ok(answer["result"].clone());
            }
        };
        tokio::time::timeout(ANSWER_WITHIN, exchange)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "DevTools {method}: no answer within {ANSWER_WITHIN:?}; the browser said:\n{}",
                    self.stderr.lock().unwrap().join("\n")
                )
            })
    }

    /// Opens `url` in a new page and waits (bounded) until it has loaded; its scripts run on:
    /// wait on what it shows with [`Browser::eval`].
    pub async fn open(&self, url: &str) -> Tab {
        let created = self
            .call(None, "Target.createTarget", json!({ "url": url }))
            .await;
        let target = created["targetId"]
            .as_str()
            .expect("a target id")
            .to_owned();
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target, "flatten": true }),
            )
            .await;
        let session = attached["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        let tab = Tab { session };
        crate::eventually(&format!("{url} to load"), LOAD_WITHIN, || async {
            // Before the navigation commits, the page is about:blank (or has no context yet).
            let state = self
                .try_eval(&tab, "document.readyState + ' ' + location.href")
                .await
                .ok()?;
            let state = state.as_str()?;
            (state.starts_with("complete ") && !state.ends_with("about:blank")).then_some(())
        })
        .await;
        tab
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value as JSON;
    /// panics when it throws.
    pub async fn eval(&self, tab: &Tab, expression: &str) -> Value {
        self.try_eval(tab, expression)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Browser::eval`], with an exception or an error answer as `Err`.
    pub async fn try_eval(&self, tab: &Tab, expression: &str) -> Result<Value, String> {
        let params = json!({
            "expression": expression,
            "returnByValue": true,
            "awaitPromise": true,
        });
        let result = self.try_call(Some(tab), "Runtime.evaluate", params).await?;
        if let Some(exception) = result.get("exceptionDetails") {
            return Err(format!(
                "the page threw evaluating {expression:?}: {exception}"
            ));
        }
        Ok(result["result"]["value"].clone())
    }

    /// The page's DOM as it is now, serialized (`document.documentElement.outerHTML`).
    pub async fn dom(&self, tab: &Tab) -> String {
        let html = self
            .eval(
                tab,
                "'<!doctype html>\\n' + document.documentElement.outerHTML",
            )
            .await;
        html.as_str().unwrap_or_default().to_owned()
    }

    /// Writes a PNG of the page's viewport ([`WINDOW`]) to `path`.
    pub async fn screenshot(&self, tab: &Tab, path: &Path) {
        use base64::Engine;
        let shot = self
            .call(
                Some(tab),
                "Page.captureScreenshot",
                json!({ "format": "png" }),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("base64 screenshot data");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// Asks the browser to quit and waits for it (bounded), then kills whatever is left of its
    /// process group and removes its profile.
    pub async fn close(mut self) {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let quit = json!({ "id": id, "method": "Browser.close" }).to_string();
        let _ = self.socket.get_mut().send(Message::text(quit)).await;
        let exited = tokio::time::timeout(QUIT_WITHIN, self.child.wait()).await;
        assert!(
            exited.is_ok(),
            "the browser did not quit within {QUIT_WITHIN:?} of Browser.close"
        );
        // Drop kills the rest of the group (a renderer still exiting) and removes the profile.
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The group is the browser's own (process_group(0)): its renderers, GPU and utility
        // processes, nothing else. ESRCH once they are all gone.
        let _ = killpg(self.group, Signal::SIGKILL);
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
