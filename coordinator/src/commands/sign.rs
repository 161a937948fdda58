//! `ebb sign drain|resume NAME`: prints the channel and a (signed, with `--secret`) payload, for
//! CI/CD systems that publish commands with `redis-cli PUBLISH` themselves.

use super::{Error, Outcome, Target};
use crate::cluster::COMMAND_TTL;
use ebb_proto::command::{Action, Command};

pub fn run(target: &Target, name: &str, action: Action) -> Result<Outcome, Error> {
    ebb_proto::keys::validate_name(name).map_err(|e| Error::Usage(e.to_string()))?;
    let keys = ebb_proto::Keys::new(&target.cluster).map_err(|e| Error::Usage(e.to_string()))?;
    let cmd = Command::new(name, action);
    println!("{}", keys.commands(name));
    println!(
        "{}",
        cmd.encode(target.secret.as_ref(), COMMAND_TTL.as_millis() as u64)
    );
    Ok(Outcome::Success)
}
