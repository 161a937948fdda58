//! `--exec`: a command run per node after its drain, for supervisors that do not restart a
//! process that exits (`systemctl restart ebb-node@{name}`, `kubectl delete pod {name}`).

use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Substitutes `{name}` and `{instance}` in `template`.
pub fn render(template: &str, name: &str, instance: &str) -> String {
    template
        .replace("{name}", name)
        .replace("{instance}", instance)
}

/// Runs `command` with `sh -c`, bounded by `limit`; `Err` carries the exit status and the end of
/// its output.
pub async fn run(command: &str, limit: Duration) -> Result<(), String> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
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
        assert_eq!(
            render("systemctl restart ebb-node@{name} # {instance}", "a", "i-1"),
            "systemctl restart ebb-node@a # i-1"
        );
    }

    #[tokio::test]
    async fn reports_failures_with_output() {
        assert_eq!(run("true", Duration::from_secs(5)).await, Ok(()));
        let err = run("echo boom >&2; exit 3", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(err.contains("boom") && err.contains('3'), "{err}");
        let err = run("sleep 5", Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(err.contains("did not finish"), "{err}");
    }
}
