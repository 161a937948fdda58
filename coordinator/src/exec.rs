//! `--exec`: a command run per node after its drain, for supervisors that do not restart a
//! process that exits (`systemctl restart ebb-node@{name}`, `kubectl delete pod {name}`).
//!
//! The template is the operator's and runs with `sh -c`; what is substituted into it comes from
//! Redis. A [`NodeName`] can only hold `[A-Za-z0-9._-]`, and each substitution is shell-quoted
//! besides, so no record can put a shell word of its own into the command line.

use ebb_proto::NodeName;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Substitutes `{name}` and `{instance}` in `template`, each as one shell-quoted word.
pub fn render(template: &str, name: &NodeName, instance: Option<uuid::Uuid>) -> String {
    let instance = instance.map(|i| i.to_string()).unwrap_or_default();
    template
        .replace("{name}", &quote(name.as_str()))
        .replace("{instance}", &quote(&instance))
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
    fn renders_placeholders() {
        let name = NodeName::parse("a").unwrap();
        let instance = uuid::Uuid::nil();
        assert_eq!(
            render(
                "systemctl restart ebb-node@{name} # {instance}",
                &name,
                Some(instance)
            ),
            format!("systemctl restart ebb-node@a # {instance}")
        );
        assert_eq!(render("x {instance}", &name, None), "x ''");
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
