//! The `--redis` URL as a typed target.
//!
//! Forms (`rediss` in place of `redis` means TLS, for each):
//! - `redis://[user:password@]host[:port][/db]`: one server (port 6379 by default);
//! - `redis+sentinel://[user:password@]h1:p1,h2:p2,.../<master-name>[/db]`: the sentinels (port
//!   26379 by default), through which the master named is resolved; the credentials are the
//!   data nodes' (the master's and replicas');
//! - `redis+cluster://[user:password@]h1:p1,h2:p2,...`: seed nodes of a Redis Cluster (database
//!   0 only, so no path).
//!
//! The user and password are percent-decoded, so a password holding `@`, `:`, `/` or `%` is
//! written `%40`, `%3A`, `%2F`, `%25`; an unencoded `@` is still read right, since the last `@`
//! ends the credentials (hosts, master names and databases hold none).
//!
//! Nothing here shows a password: [`RedisTarget`]'s `Display` and `Debug` print `***` in its place.

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use std::fmt;
use std::path::{Path, PathBuf};

/// Port of a Redis server when the URL names none.
pub const DEFAULT_REDIS_PORT: u16 = 6379;
/// Port of a sentinel when the URL names none.
pub const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// What is wrong with a `--redis` URL (or with `--redis-ca` beside it). Each message names the
/// part at fault and never carries the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error(
        "expected a URL starting with redis://, rediss://, redis+sentinel:// or redis+cluster://"
    )]
    MissingScheme,
    #[error(
        "unknown scheme {0:?}: expected redis, rediss, redis+sentinel, rediss+sentinel, redis+cluster or rediss+cluster"
    )]
    UnknownScheme(String),
    #[error("no host: the URL names no server")]
    NoHost,
    #[error("an empty host in the list (two commas in a row, or a comma at an end)")]
    EmptyHost,
    #[error(
        "a single-server URL names one host, not {0} (use redis+sentinel:// or redis+cluster:// for several)"
    )]
    SeveralHosts(usize),
    #[error("bad port {port:?} for host {host:?}: expected a number from 1 to 65535")]
    BadPort { host: String, port: String },
    #[error("bad IPv6 address {0:?}: expected [address]:port")]
    BadIpv6(String),
    #[error("bad database {0:?}: expected a number from 0 to 1000000")]
    BadDb(String),
    #[error(
        "a sentinel URL needs the master's name as its path: redis+sentinel://h1:p1,h2:p2/<master-name>"
    )]
    NoMasterName,
    #[error("bad master name {0:?}: expected letters, digits, '.', '_' or '-'")]
    BadMasterName(String),
    #[error(
        "a Redis Cluster has database 0 only: a redis+cluster:// URL takes no path (found {0:?})"
    )]
    ClusterPath(String),
    #[error("unexpected path {0:?}: expected at most /<db>")]
    ExtraPath(String),
    #[error("query parameters are not supported (found ?{0})")]
    Query(String),
    #[error("bad percent-encoding in the {0} (write % as %25)")]
    BadEncoding(&'static str),
    #[error("a user without a password; write user:password@ (or :password@ for the default user)")]
    UserWithoutPassword,
    #[error(
        "--redis-ca is for TLS: use a rediss:// URL (or rediss+sentinel://, rediss+cluster://)"
    )]
    CaWithoutTls,
}

/// One address: a host name or IP literal (IPv6 without its brackets) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// An ACL user and its password (or the default user's password alone). `Debug` hides the
/// password; read it with [`Credentials::password`] only to hand it to the client.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Credentials {
    pub username: Option<String>,
    password: Option<String>,
}

impl Credentials {
    pub fn new(username: Option<String>, password: Option<String>) -> Self {
        Self { username, password }
    }

    /// The password, for the connection only: never log it.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    pub fn is_empty(&self) -> bool {
        self.username.is_none() && self.password.is_none()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Which Redis deployment a target is, with its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// One server.
    Single { addr: HostPort, db: u32 },
    /// Sentinels watching the master named `master`.
    Sentinel {
        sentinels: Vec<HostPort>,
        master: String,
        db: u32,
    },
    /// Seed nodes of a Redis Cluster.
    Cluster { seeds: Vec<HostPort> },
}

/// A parsed `--redis` URL, plus `--redis-ca`: everything needed to connect, nothing to re-parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    pub topology: Topology,
    /// TLS to every server (`rediss`).
    pub tls: bool,
    pub credentials: Credentials,
    /// A PEM file of the CA that signed the servers' certificates (`--redis-ca`); without it the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
}

/// Largest database number accepted (Redis's own limit is the `databases` setting).
const MAX_DB: u32 = 1_000_000;

impl RedisTarget {
    /// Parses a `--redis` URL.
    pub fn parse(url: &str) -> Result<Self, TargetError> {
        let url = url.trim();
        let (scheme, rest) = url.split_once("://").ok_or(TargetError::MissingScheme)?;
        let (tls, kind) = match scheme.to_ascii_lowercase().as_str() {
            "redis" => (false, Kind::Single),
            "rediss" => (true, Kind::Single),
            "redis+sentinel" => (false, Kind::Sentinel),
            "rediss+sentinel" => (true, Kind::Sentinel),
            "redis+cluster" => (false, Kind::Cluster),
            "rediss+cluster" => (true, Kind::Cluster),
            _ => return Err(TargetError::UnknownScheme(scheme.to_owned())),
        };
        // The last '@' ends the credentials: hosts, master names and databases hold none.
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((u, r)) => (Some(u), r),
            None => (None, rest),
        };
        let credentials = match userinfo {
            None => Credentials::default(),
            Some(u) => parse_userinfo(u)?,
        };
        if let Some((_, query)) = rest.split_once('?') {
            return Err(TargetError::Query(query.to_owned()));
        }
        let (hosts, path) = match rest.split_once('/') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        };
        let default_port = match kind {
            Kind::Sentinel => DEFAULT_SENTINEL_PORT,
            Kind::Single | Kind::Cluster => DEFAULT_REDIS_PORT,
        };
        let addrs = parse_hosts(hosts, default_port)?;
        let topology = match kind {
            Kind::Single => {
                if addrs.len() > 1 {
                    return Err(TargetError::SeveralHosts(addrs.len()));
                }
                let db = match path {
                    None | Some("") => 0,
                    Some(p) => parse_db(p)?,
                };
                let addr = addrs.into_iter().next().ok_or(TargetError::NoHost)?;
                Topology::Single { addr, db }
            }
            Kind::Sentinel => {
                let path = path
                    .filter(|p| !p.is_empty())
                    .ok_or(TargetError::NoMasterName)?;
                let (master, db) = match path.split_once('/') {
                    None => (path, 0),
                    Some((m, "")) => (m, 0),
                    Some((m, d)) => (m, parse_db(d)?),
                };
                if master.is_empty() {
                    return Err(TargetError::NoMasterName);
                }
                if !master
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                {
                    return Err(TargetError::BadMasterName(master.to_owned()));
                }
                Topology::Sentinel {
                    sentinels: addrs,
                    master: master.to_owned(),
                    db,
                }
            }
            Kind::Cluster => {
                if let Some(p) = path.filter(|p| !p.is_empty()) {
                    return Err(TargetError::ClusterPath(format!("/{p}")));
                }
                Topology::Cluster { seeds: addrs }
            }
        };
        Ok(Self {
            topology,
            tls,
            credentials,
            ca_file: None,
        })
    }

    /// Adds `--redis-ca`: refused unless the target uses TLS.
    pub fn with_ca(mut self, ca_file: Option<&Path>) -> Result<Self, TargetError> {
        if let Some(ca) = ca_file {
            if !self.tls {
                return Err(TargetError::CaWithoutTls);
            }
            self.ca_file = Some(ca.to_owned());
        }
        Ok(self)
    }

    /// The database the data nodes are asked for (0 on a Cluster, which has no other).
    pub fn db(&self) -> u32 {
        match &self.topology {
            Topology::Single { db, .. } | Topology::Sentinel { db, .. } => *db,
            Topology::Cluster { .. } => 0,
        }
    }

    /// The URL form, e.g. `rediss+sentinel://`, for messages.
    pub fn form(&self) -> &'static str {
        match (&self.topology, self.tls) {
            (Topology::Single { .. }, false) => "redis://",
            (Topology::Single { .. }, true) => "rediss://",
            (Topology::Sentinel { .. }, false) => "redis+sentinel://",
            (Topology::Sentinel { .. }, true) => "rediss+sentinel://",
            (Topology::Cluster { .. }, false) => "redis+cluster://",
            (Topology::Cluster { .. }, true) => "rediss+cluster://",
        }
    }

    fn scheme(&self) -> &'static str {
        self.form().trim_end_matches("://")
    }
}

impl std::str::FromStr for RedisTarget {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The URL with `***` for the password: safe for logs, `ebb status` and reports.
impl fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme())?;
        let c = &self.credentials;
        match (&c.username, &c.password) {
            (Some(u), Some(_)) => write!(f, "{}:***@", encode(u))?,
            (None, Some(_)) => write!(f, ":***@")?,
            (Some(u), None) => write!(f, "{}@", encode(u))?,
            (None, None) => {}
        }
        let list = |f: &mut fmt::Formatter<'_>, addrs: &[HostPort]| -> fmt::Result {
            for (i, a) in addrs.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{a}")?;
            }
            Ok(())
        };
        match &self.topology {
            Topology::Single { addr, db } => {
                write!(f, "{addr}")?;
                if *db != 0 {
                    write!(f, "/{db}")?;
                }
            }
            Topology::Sentinel {
                sentinels,
                master,
                db,
            } => {
                list(f, sentinels)?;
                write!(f, "/{master}")?;
                if *db != 0 {
                    write!(f, "/{db}")?;
                }
            }
            Topology::Cluster { seeds } => list(f, seeds)?,
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Single,
    Sentinel,
    Cluster,
}

fn parse_userinfo(userinfo: &str) -> Result<Credentials, TargetError> {
    let (user, password) = match userinfo.split_once(':') {
        Some((u, p)) => (u, Some(p)),
        None => (userinfo, None),
    };
    let user = decode(user, "user name")?;
    let password = password.map(|p| decode(p, "password")).transpose()?;
    let user = (!user.is_empty()).then_some(user);
    match (user, password) {
        (None, None) => Ok(Credentials::default()),
        (Some(_), None) => Err(TargetError::UserWithoutPassword),
        (user, password) => Ok(Credentials::new(user, password)),
    }
}

fn parse_hosts(list: &str, default_port: u16) -> Result<Vec<HostPort>, TargetError> {
    if list.trim().is_empty() {
        return Err(TargetError::NoHost);
    }
    list.split(',')
        .map(|h| parse_host(h.trim(), default_port))
        .collect()
}

fn parse_host(s: &str, default_port: u16) -> Result<HostPort, TargetError> {
    if s.is_empty() {
        return Err(TargetError::EmptyHost);
    }
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| TargetError::BadIpv6(s.to_owned()))?;
        if host.is_empty() || host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(TargetError::BadIpv6(s.to_owned()));
        }
        match after {
            "" => (host, None),
            p => (
                host,
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| TargetError::BadIpv6(s.to_owned()))?,
                ),
            ),
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err(TargetError::EmptyHost);
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(TargetError::BadPort {
                    host: host.to_owned(),
                    port: p.to_owned(),
                });
            }
        },
    };
    Ok(HostPort {
        host: host.to_owned(),
        port,
    })
}

fn parse_db(s: &str) -> Result<u32, TargetError> {
    if s.contains('/') {
        return Err(TargetError::ExtraPath(format!("/{s}")));
    }
    match s.parse::<u32>() {
        Ok(n) if n <= MAX_DB && s.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(TargetError::BadDb(s.to_owned())),
    }
}

/// Percent-decodes a user name or password; a `%` not followed by two hex digits is an error
/// (the crate passes it through as it is, which would hand Redis a password nobody wrote).
fn decode(s: &str, what: &'static str) -> Result<String, TargetError> {
    let well_formed = s.split('%').skip(1).all(|p| {
        p.as_bytes()
            .get(..2)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return Err(TargetError::BadEncoding(what));
    }
    percent_decode_str(s)
        .decode_utf8()
        .map(Into::into)
        .map_err(|_| TargetError::BadEncoding(what))
}

/// What a user name must not hold as it is in a URL that parses back to the same target.
const USERINFO_RESERVED: &AsciiSet = &CONTROLS
    .add(b'%')
    .add(b'@')
    .add(b':')
    .add(b'/')
    .add(b',')
    .add(b'?')
    .add(b'#');

fn encode(s: &str) -> String {
    utf8_percent_encode(s, USERINFO_RESERVED).to_string()
}

#[cfg(test)]
mod tests;
