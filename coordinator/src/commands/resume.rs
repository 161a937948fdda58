//! `ebb resume NAME`: a node drained with `--then stay` (or still draining) becomes active.

use super::{Error, Outcome, Target};
use ebb_proto::NodeName;
use ebb_proto::command::{Action, Command, Resume};

pub async fn run(target: &Target, name: &NodeName) -> Result<Outcome, Error> {
    let mut cluster = target.connect().await?;
    let node = match super::find_node(&mut cluster, target, name).await? {
        Ok(node) => node,
        Err(missing) => return Ok(missing),
    };
    let mut cmd = Command::new(&target.cluster, name.clone(), Action::Resume(Resume {}));
    cmd.instance = Some(node.instance);
    let receivers = cluster.send(&cmd).await?;
    eprintln!("resume sent to {name}; {receivers} subscriber(s) received it");
    Ok(Outcome::Success)
}
