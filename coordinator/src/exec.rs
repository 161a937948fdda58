//! Operator commands the rollout runs: `--exec`, after each drain, for supervisors that do not
//! restart a process that exits (`systemctl restart ebb-node@{name}`, `kubectl delete pod
//! {name}`); and `--check`, a gate once each replacement is ready (`curl -fsS {url}/health`).
//!
//! The template is the operator's and runs with `sh -c`; what is substituted into it comes from
//! Redis. A [`ebb_proto::NodeName`] can only hold `[A-Za-z0-9._-]` and a URL only printable ASCII,
//! and each substitution is shell-quoted besides, in one pass (a value is never scanned for
//! placeholders), so no record can put a shell word of its own into the command line.

use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Substitutes each `{key}` of `vars` in `template` by its value as one shell-quoted word, in one
/// pass; unknown placeholders stay as they are.
pub fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open..];
        let known = vars.iter().find(|(key, _)| {
            after
                .strip_prefix('{')
                .and_then(|a| a.strip_prefix(key))
                .is_some_and(|a| a.starts_with('}'))
        });
        match known {
            Some((key, value)) => {
                out.push_str(&quote(value));
                rest = &after[key.len() + 2..];
            }
            None => {
                out.push('{');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// One shell word for `value` (quoted only when it needs it).
fn quote(value: &str) -> String {
    shlex::try_quote(value)
        .map(|q| q.into_owned())
        .unwrap_or_else(|_| "''".to_owned())
}

/// Runs `command` with `sh -c`, bounded by `limit`; `Err` carries the exit status and the end of
/// its output.
pub async fn run(command: String, limit: Duration) -> Result<(), String> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let run = async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let (_, _, status) = tokio::join!(
            stdout.read_to_end(&mut out),
            stderr.read_to_end(&mut err),
            child.wait()
        );
        (status, out, err)
    };
    let (status, out, err) = tokio::time::timeout(limit, run)
        .await
        .map_err(|_| format!("{command:?} did not finish within {limit:?}"))?;
    let status = status.map_err(|e| format!("waiting for {command:?}: {e}"))?;
    if status.success() {
        return Ok(());
    }
    let mut tail = String::from_utf8_lossy(&err).into_owned();
    if tail.trim().is_empty() {
        tail = String::from_utf8_lossy(&out).into_owned();
    }
    let tail: String = tail
        .trim()
        .chars()
        .rev()
        .take(300)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Err(format!("{command:?} exited with {status}: {tail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_placeholders_in_one_pass() {
        let instance = uuid::Uuid::nil().to_string();
        let vars = [("name", "a"), ("instance", instance.as_str())];
        assert_eq!(
            render("systemctl restart ebb-node@{name} # {instance}", &vars),
            format!("systemctl restart ebb-node@a # {instance}")
        );
        assert_eq!(
            render("x {instance} {other} {", &[("instance", "")]),
            "x '' {other} {"
        );
        // A value holding a placeholder is not expanded again.
        let vars = [("url", "ws://x/{name}"), ("name", "n1")];
        assert_eq!(
            render("curl {url} {name}", &vars),
            "curl 'ws://x/{name}' n1"
        );
    }

    #[test]
    fn a_substitution_is_one_shell_word() {
        // A NodeName cannot hold shell syntax; the quoting is a second wall behind it.
        assert_eq!(quote("evil;touch /tmp/x"), "'evil;touch /tmp/x'");
        assert_eq!(quote("$(id)"), "'$(id)'");
        assert_eq!(quote("a'b"), "\"a'b\"");
        assert_eq!(quote("web-1.eu"), "web-1.eu");
    }

    #[tokio::test]
    async fn reports_failures_with_output() {
        assert_eq!(run("true".into(), Duration::from_secs(5)).await, Ok(()));
        let err = run("echo boom >&2; exit 3".into(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(err.contains("boom") && err.contains('3'), "{err}");
        let err = run("sleep 5".into(), Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(err.contains("did not finish"), "{err}");
    }
}
