//! `ebb watch [ID] [--timeout D]`: follows a request of `ebb serve` (by default the one whose
//! rollout is running) to its end: its progress lines as they are published, then its result;
//! exits with the rollout's exit code (0 completed, 1 aborted or refused, 2 failed), so a
//! pipeline step is `ebb request rolling-restart --wait` or `ebb watch ID`.

use super::{Error, Outcome, Target};
use crate::service::results::{self, State};
use std::time::Duration;

/// How often the result is read while progress lines come.
const POLL: Duration = Duration::from_millis(500);

pub async fn run(target: &Target, id: Option<String>, limit: Duration) -> Result<Outcome, Error> {
    let id = match id {
        Some(id) => id,
        None => running_request(target).await?.ok_or_else(|| {
            Error::Usage("no request of `ebb serve` is running; name one: ebb watch ID".to_owned())
        })?,
    };
    follow(target, &id, limit).await
}

/// The request whose rollout is running, if any.
async fn running_request(target: &Target) -> Result<Option<String>, Error> {
    let mut cluster = target.connect().await?;
    let Some(json) = cluster.rollout_state().await? else {
        return Ok(None);
    };
    Ok(super::rolling_restart::read_saved(&json)
        .ok()
        .and_then(|saved| saved.request))
}

/// Prints request `id`'s progress until its result is final; its exit code.
pub async fn follow(target: &Target, id: &str, limit: Duration) -> Result<Outcome, Error> {
    let mut cluster = target.connect().await?;
    let mut lines = cluster.subscribe(&cluster.keys().progress()).await?;
    let deadline = tokio::time::Instant::now() + limit;
    let mut poll = tokio::time::interval(POLL);
    let mut last = None;
    let mut following = true;
    loop {
        tokio::select! {
            message = lines.next(), if following => match message {
                Ok(payload) => print_line(id, &payload),
                // The result is still polled: only the progress lines stop.
                Err(why) => {
                    eprintln!("request {id}: progress lines lost ({why}); waiting for the result");
                    following = false;
                }
            },
            _ = poll.tick() => {
                let result = results::load(&mut cluster, id).await?;
                if let Some(result) = &result {
                    if last != Some(result.status) {
                        eprintln!("request {id}: {}", status_word(result.status));
                        last = Some(result.status);
                    }
                    if result.status.is_final() {
                        return ended(result);
                    }
                }
                if tokio::time::Instant::now() >= deadline {
                    return Ok(Outcome::Failed(format!(
                        "request {id} did not finish within {limit:?} (`ebb watch {id}` goes on following it)"
                    )));
                }
            }
        }
    }
}

fn status_word(state: State) -> &'static str {
    match state {
        State::Queued => "queued",
        State::Running => "running",
        State::Paused => "paused",
        State::Completed => "completed",
        State::Aborted => "aborted",
        State::Failed => "failed",
        State::Refused => "refused",
    }
}

/// One progress line, if it is about `id` (anything else on the channel is ignored).
fn print_line(id: &str, payload: &[u8]) {
    let Ok(line) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return;
    };
    if line["request"] != id {
        return;
    }
    let message: String = line["message"]
        .as_str()
        .unwrap_or("")
        .chars()
        .take(500)
        .collect();
    match line["node"].as_str() {
        Some(node) => eprintln!(
            "ebb: {}: {message}",
            node.chars().take(128).collect::<String>()
        ),
        None => eprintln!("ebb: {message}"),
    }
}

/// The report on stdout, and the outcome that gives the exit code (0, 1, or 2 as an error).
fn ended(result: &results::RequestResult) -> Result<Outcome, Error> {
    if let Some(report) = &result.report {
        println!("{report}");
    }
    let why = || {
        format!(
            "request {} {}: {}",
            result.id,
            status_word(result.status),
            result.reason.as_deref().unwrap_or("see the report")
        )
    };
    match result.status.exit_code() {
        0 => Ok(Outcome::Success),
        2 => Err(Error::Infrastructure(why())),
        _ => Ok(Outcome::Failed(why())),
    }
}
