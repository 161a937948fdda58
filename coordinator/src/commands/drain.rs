//! `ebb drain NAME [--then exit|stay] [--deadline D] [--wait]`.

use super::{Error, Outcome, Target};
use crate::cluster::Followed;
use ebb_proto::command::{Action, Command, Drain, Then};
use ebb_proto::{NodeName, NodeState};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What to drain.
#[derive(Debug, Clone)]
pub struct Args {
    pub name: NodeName,
    pub then: Then,
    pub deadline: Option<Duration>,
    /// Wait until drained (stay) or gone (exit), at most this long.
    pub wait: Option<Duration>,
}

pub async fn run(target: &Target, args: Args) -> Result<Outcome, Error> {
    let drain = Drain {
        then: args.then,
        deadline_ms: args.deadline.map(|d| d.as_millis() as u64),
        targets: Vec::new(),
    };
    drain
        .validate()
        .map_err(|e| Error::Usage(format!("--deadline: {e}")))?;
    let mut cluster = target.connect().await?;
    let node = match super::find_node(&mut cluster, target, &args.name).await? {
        Ok(node) => node,
        Err(missing) => return Ok(missing),
    };
    let instance = node.instance;
    let stop = CancellationToken::new();
    let mut events = cluster.follow_events(stop.clone());
    let mut cmd = Command::new(&target.cluster, args.name.clone(), Action::Drain(drain));
    cmd.instance = Some(instance);
    let receivers = cluster.send(&cmd).await?;
    eprintln!(
        "drain sent to {} (instance {instance}, then {}); {receivers} subscriber(s) received it",
        args.name, args.then
    );
    let Some(limit) = args.wait else {
        stop.cancel();
        return Ok(Outcome::Success);
    };
    let done = async {
        loop {
            let records = cluster.nodes().await?;
            let current = records.iter().find(|n| n.name == args.name);
            let finished = match (args.then, current) {
                (Then::Exit, None) => true,
                (Then::Exit, Some(n)) => n.instance != instance,
                (Then::Stay, Some(n)) => n.instance == instance && n.state == NodeState::Drained,
                (Then::Stay, None) => {
                    return Ok::<_, Error>(Some(format!(
                        "{} disappeared while draining",
                        args.name
                    )));
                }
            };
            if finished {
                return Ok(None);
            }
            if let Some(n) = current {
                eprintln!(
                    "{}: {} with {} connection(s)",
                    n.name, n.state, n.connections
                );
            }
            // Re-read on the next event about anything, or after a second.
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Some(followed) = events.recv().await {
                    if let Followed::Event(e) = followed
                        && e.node == args.name
                    {
                        break;
                    }
                }
            })
            .await;
        }
    };
    let result = tokio::time::timeout(limit, done).await;
    stop.cancel();
    match result {
        Ok(Ok(None)) => {
            eprintln!(
                "{}: {}",
                args.name,
                match args.then {
                    Then::Exit => "drained and exited",
                    Then::Stay => "drained (staying up; `ebb resume` brings it back)",
                }
            );
            Ok(Outcome::Success)
        }
        Ok(Ok(Some(problem))) => Ok(Outcome::Failed(problem)),
        Ok(Err(error)) => Err(error),
        Err(_) => Ok(Outcome::Failed(format!(
            "{} did not finish draining within {limit:?}",
            args.name
        ))),
    }
}
