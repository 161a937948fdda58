//! `ebb sign drain|resume NAME`: prints the channel and a (signed, with `--secret`) payload, for
//! CI/CD systems that publish commands with `redis-cli PUBLISH` themselves.

use super::{Error, Outcome, Target};
use crate::cluster::COMMAND_TTL;
use ebb_proto::NodeName;
use ebb_proto::command::{Action, Command};

pub fn run(target: &Target, name: &NodeName, action: Action) -> Result<Outcome, Error> {
    let keys = ebb_proto::Keys::new(&target.cluster).map_err(|e| Error::Usage(e.to_string()))?;
    let cmd = Command::new(&target.cluster, name.clone(), action);
    println!("{}", keys.commands(name));
    println!(
        "{}",
        cmd.encode(target.secret.as_ref(), COMMAND_TTL.as_millis() as u64)
    );
    Ok(Outcome::Success)
}
