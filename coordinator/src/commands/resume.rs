//! `ebb resume NAME`: a node drained with `--then stay` (or still draining) becomes active.

use super::{Error, Outcome, Target};
use ebb_proto::command::{Action, Command, Resume};

pub async fn run(target: &Target, name: &str) -> Result<Outcome, Error> {
    ebb_proto::keys::validate_name(name).map_err(|e| Error::Usage(e.to_string()))?;
    let mut cluster = target.connect().await?;
    let nodes = cluster.nodes().await?;
    let Some(node) = nodes.iter().find(|n| n.name == name) else {
        return Ok(Outcome::Failed(format!(
            "node {name} is not registered in cluster {:?}",
            target.cluster
        )));
    };
    let mut cmd = Command::new(name, Action::Resume(Resume {}));
    cmd.instance = Some(node.instance);
    let receivers = cluster.send(&cmd, target.secret.as_ref()).await?;
    eprintln!("resume sent to {name}; {receivers} subscriber(s) received it");
    Ok(Outcome::Success)
}
