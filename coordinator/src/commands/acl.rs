//! `ebb acl --role node|coordinator|trigger|viewer [--node N]... [--user NAME]
//! [--password-env VAR] [--format commands|aclfile]`: prints the Redis ACL rules of one role of
//! this cluster ([`ebb_proto::acl`]), one user a line. Needs no Redis.
//!
//! `commands` lines are `ACL SETUSER ...` for `redis-cli` to read from stdin; `aclfile` lines are
//! `user ...` for Redis's `aclfile`. The password is the placeholder `>CHANGE-ME` unless
//! `--password-env` names a variable holding it; then its SHA-256 (`#<hex>`) is printed, never the
//! password itself. There is no flag that takes a password: it would show in `ps` and histories.

use super::{Error, Outcome, Target};
use ebb_proto::acl::{AclUser, Password, Role, UserName};
use ebb_proto::{Keys, NodeName};

/// Which role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleKind {
    Node,
    Coordinator,
    Trigger,
    Viewer,
}

/// How to print the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `ACL SETUSER <user> <rules>`, for `redis-cli` (selectors double-quoted).
    Commands,
    /// `user <user> <rules>`, for an ACL file.
    AclFile,
}

/// The flags of `acl`.
#[derive(Debug, Clone)]
pub struct Args {
    pub role: RoleKind,
    /// With `--role node`: one user per node.
    pub nodes: Vec<NodeName>,
    /// Instead of the default name ([`Role::default_user`]); only for one user.
    pub user: Option<UserName>,
    /// The environment variable that holds the password; only for one user.
    pub password_env: Option<String>,
    pub format: Format,
}

pub fn run(target: &Target, args: Args) -> Result<Outcome, Error> {
    let (keys, roles) = plan(&target.cluster, &args)?;
    let password = match &args.password_env {
        None => Password::Placeholder,
        Some(var) => {
            let value = std::env::var(var).map_err(|e| {
                Error::Usage(format!(
                    "--password-env {var}: the variable is unusable: {e}"
                ))
            })?;
            Password::hashed(&value)
                .map_err(|e| Error::Usage(format!("--password-env {var}: {e}")))?
        }
    };
    for line in render(&keys, &roles, &args, &password) {
        println!("{line}");
    }
    Ok(Outcome::Success)
}

/// The lines to print for `args` in `cluster`, with `password`.
pub fn lines(cluster: &str, args: &Args, password: Password) -> Result<Vec<String>, Error> {
    let (keys, roles) = plan(cluster, args)?;
    Ok(render(&keys, &roles, args, &password))
}

/// The cluster's keys and the roles to print, or why the flags do not fit together.
fn plan(cluster: &str, args: &Args) -> Result<(Keys, Vec<Role>), Error> {
    let keys = Keys::new(cluster).map_err(|e| Error::Usage(format!("--cluster: {e}")))?;
    let roles = roles(args)?;
    if roles.len() > 1 && args.user.is_some() {
        return Err(Error::Usage(
            "--user names one user; give one --node with it".to_owned(),
        ));
    }
    if roles.len() > 1 && args.password_env.is_some() {
        return Err(Error::Usage(
            "each node needs its own password (a node that knew another's could log in as it): run `ebb acl --role node --node N --password-env VAR` once per node".to_owned(),
        ));
    }
    Ok((keys, roles))
}

fn render(keys: &Keys, roles: &[Role], args: &Args, password: &Password) -> Vec<String> {
    roles
        .iter()
        .map(|role| {
            let user = AclUser::new(keys, role, args.user.clone(), password.clone());
            match args.format {
                Format::Commands => user.command_line(),
                Format::AclFile => user.acl_file_line(),
            }
        })
        .collect()
}

fn roles(args: &Args) -> Result<Vec<Role>, Error> {
    let single = |role: Role| {
        if args.nodes.is_empty() {
            Ok(vec![role])
        } else {
            Err(Error::Usage("--node is only for --role node".to_owned()))
        }
    };
    match args.role {
        RoleKind::Node if args.nodes.is_empty() => Err(Error::Usage(
            "--role node needs --node NAME (once per node)".to_owned(),
        )),
        RoleKind::Node => {
            let mut seen = std::collections::HashSet::new();
            if let Some(twice) = args.nodes.iter().find(|n| !seen.insert(*n)) {
                return Err(Error::Usage(format!("--node {twice} is given twice")));
            }
            Ok(args.nodes.iter().cloned().map(Role::Node).collect())
        }
        RoleKind::Coordinator => single(Role::Coordinator),
        RoleKind::Trigger => single(Role::Trigger),
        RoleKind::Viewer => single(Role::Viewer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(role: RoleKind, nodes: &[&str]) -> Args {
        Args {
            role,
            nodes: nodes.iter().map(|n| NodeName::parse(n).unwrap()).collect(),
            user: None,
            password_env: None,
            format: Format::Commands,
        }
    }

    fn usage(result: Result<Vec<String>, Error>) -> String {
        match result {
            Err(Error::Usage(why)) => why,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn one_line_per_node_with_the_placeholder() {
        let out = lines(
            "default",
            &args(RoleKind::Node, &["node-1", "node-2"]),
            Password::Placeholder,
        )
        .unwrap();
        assert_eq!(out.len(), 2);
        assert!(
            out[0].starts_with("ACL SETUSER ebb-node-node-1 reset on >CHANGE-ME "),
            "{}",
            out[0]
        );
        assert!(out[1].contains("ebb:{default}:node:node-2 "), "{}", out[1]);
        let mut file = args(RoleKind::Viewer, &[]);
        file.format = Format::AclFile;
        file.user = Some(UserName::parse("status-page").unwrap());
        let out = lines("prod", &file, Password::hashed("s3cret-s3cret").unwrap()).unwrap();
        assert_eq!(out.len(), 1);
        assert!(
            out[0].starts_with("user status-page reset on #"),
            "{}",
            out[0]
        );
        assert!(!out[0].contains("s3cret"));
        assert!(out[0].contains("%R~ebb:{prod}:node:*"));
    }

    #[test]
    fn contradictory_flags_are_usage_errors() {
        let p = || Password::Placeholder;
        assert!(usage(lines("default", &args(RoleKind::Node, &[]), p())).contains("--node NAME"));
        assert!(
            usage(lines("default", &args(RoleKind::Viewer, &["n1"]), p())).contains("only for")
        );
        assert!(
            usage(lines("default", &args(RoleKind::Node, &["n1", "n1"]), p())).contains("twice")
        );
        assert!(usage(lines("bad name", &args(RoleKind::Viewer, &[]), p())).contains("--cluster"));
        let mut two = args(RoleKind::Node, &["n1", "n2"]);
        two.user = Some(UserName::parse("x").unwrap());
        assert!(usage(lines("default", &two, p())).contains("--user"));
        two.user = None;
        two.password_env = Some("PW".to_owned());
        assert!(usage(lines("default", &two, p())).contains("its own password"));
    }
}
