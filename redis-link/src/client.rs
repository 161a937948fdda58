//! From a [`RedisTarget`] to a redis-rs client.
//!
//! Built from the parsed target, never by formatting a URL back, so a password holding `@` or `%`
//! reaches the server as it was given. Every client skips `CLIENT SETINFO` on connect
//! ([`without_setinfo`]).
//!
//! A single server is connected over plain TCP or TLS (rustls; the servers' certificates are
//! checked against `--redis-ca` when given, else the system's roots, and always against the host
//! name). Sentinel and Cluster targets name no single server: [`crate::Link`] reaches them, and
//! these functions refuse them with [`ClientError::Unsupported`], which names the form.

use crate::target::{HostPort, RedisTarget, Topology};
use std::path::PathBuf;
use std::sync::Once;

/// Why no client could be made for a target.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0} URLs name no single server (connect through a Link)")]
    Unsupported(&'static str),
    #[error("cannot read the CA file {path}: {source}")]
    Ca {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Redis client for {target}: {source}")]
    Redis {
        /// The redacted target.
        target: String,
        #[source]
        source: redis::RedisError,
    },
}

/// The same connection details, with no `CLIENT SETINFO` sent on connect: that command does not
/// exist before Redis 7.2, so a node's ACL rules (`ebb acl`) cannot name it, and refused it would
/// leave a denial in the ACL LOG for every connection. Every ebb client is made this way.
pub fn without_setinfo(info: redis::ConnectionInfo) -> redis::ConnectionInfo {
    let settings = info.redis_settings().clone().set_skip_set_lib_name();
    info.set_redis_settings(settings)
}

/// `addr` over TLS when the target is (its certificates added by the client that uses it).
pub(crate) fn address(target: &RedisTarget, addr: &HostPort) -> redis::ConnectionAddr {
    if target.tls {
        redis::ConnectionAddr::TcpTls {
            host: addr.host.clone(),
            port: addr.port,
            insecure: false,
            tls_params: None,
        }
    } else {
        redis::ConnectionAddr::Tcp(addr.host.clone(), addr.port)
    }
}

/// A client to one sentinel (TLS as the target says; sentinels take no credentials here).
pub(crate) fn sentinel_client(
    target: &RedisTarget,
    addr: &HostPort,
) -> Result<redis::Client, ClientError> {
    let redis_error = |source| ClientError::Redis {
        target: target.to_string(),
        source,
    };
    let info = redis::IntoConnectionInfo::into_connection_info(address(target, addr))
        .map_err(redis_error)?;
    let info = without_setinfo(info);
    if target.tls {
        redis::Client::build_with_tls(info, tls_certificates(target)?).map_err(redis_error)
    } else {
        redis::Client::open(info).map_err(redis_error)
    }
}

/// The connection details redis-rs needs for a single server (TLS without its certificates:
/// [`client`] adds those).
pub fn connection_info(target: &RedisTarget) -> Result<redis::ConnectionInfo, ClientError> {
    let (addr, db) = match &target.topology {
        Topology::Single { addr, db } => (addr, *db),
        Topology::Sentinel { .. } => return Err(ClientError::Unsupported(target.form())),
        Topology::Cluster { .. } => return Err(ClientError::Unsupported(target.form())),
    };
    let info = redis::IntoConnectionInfo::into_connection_info(address(target, addr)).map_err(
        |source| ClientError::Redis {
            target: target.to_string(),
            source,
        },
    )?;
    let info = without_setinfo(info);
    let mut settings = info.redis_settings().clone().set_db(i64::from(db));
    if let Some(user) = &target.credentials.username {
        settings = settings.set_username(user);
    }
    if let Some(password) = target.credentials.password() {
        settings = settings.set_password(password);
    }
    Ok(info.set_redis_settings(settings))
}

/// A redis-rs client for a single server (connections are made from it on demand). With TLS and
/// a CA file, the file is read now, so a missing or unreadable one is an error at start-up.
pub fn client(target: &RedisTarget) -> Result<redis::Client, ClientError> {
    let info = connection_info(target)?;
    let redis_error = |source| ClientError::Redis {
        target: target.to_string(),
        source,
    };
    if !target.tls {
        return redis::Client::open(info).map_err(redis_error);
    }
    redis::Client::build_with_tls(info, tls_certificates(target)?).map_err(redis_error)
}

/// The roots a TLS target's servers are checked against: `--redis-ca`, read now, or (`None`)
/// the system's.
pub(crate) fn tls_certificates(
    target: &RedisTarget,
) -> Result<redis::TlsCertificates, ClientError> {
    install_crypto_provider();
    let root_cert = match &target.ca_file {
        None => None,
        Some(path) => Some(std::fs::read(path).map_err(|source| ClientError::Ca {
            path: path.clone(),
            source,
        })?),
    };
    Ok(redis::TlsCertificates {
        client_tls: None,
        root_cert,
    })
}

/// rustls needs a process-wide crypto provider; ring is the one this crate builds with. Another
/// one installed first (by the application) is kept.
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_server_info_carries_what_the_url_said() {
        let t = RedisTarget::parse("redis://ebb:p%40ss@127.0.0.1:6390/3").unwrap();
        let info = connection_info(&t).unwrap();
        assert_eq!(
            info.addr(),
            &redis::ConnectionAddr::Tcp("127.0.0.1".into(), 6390)
        );
        let r = info.redis_settings();
        assert_eq!(r.username(), Some("ebb"));
        assert_eq!(r.password(), Some("p@ss"));
        assert_eq!(r.db(), 3);
        assert!(r.skip_set_lib_name());
        assert!(client(&t).is_ok());
    }

    #[test]
    fn forms_that_name_no_single_server_are_refused_by_name() {
        for (url, form) in [
            ("rediss+sentinel://s:1/m", "rediss+sentinel://"),
            ("redis+sentinel://s:1/m", "redis+sentinel://"),
            ("redis+cluster://a:1", "redis+cluster://"),
        ] {
            let t = RedisTarget::parse(url).unwrap();
            let err = connection_info(&t).unwrap_err();
            assert!(
                matches!(err, ClientError::Unsupported(f) if f == form),
                "{url}"
            );
        }
    }

    #[test]
    fn a_tls_target_is_connected_over_tls_with_its_ca_read_at_once() {
        let t = RedisTarget::parse("rediss://h:6380").unwrap();
        let info = connection_info(&t).unwrap();
        assert!(matches!(
            info.addr(),
            redis::ConnectionAddr::TcpTls { host, port: 6380, insecure: false, .. } if host == "h"
        ));
        assert!(client(&t).is_ok(), "system roots");
        let missing = t
            .with_ca(Some(std::path::Path::new("/nonexistent/ca.pem")))
            .unwrap();
        let err = client(&missing).unwrap_err();
        assert!(
            matches!(&err, ClientError::Ca { path, .. } if path.ends_with("ca.pem")),
            "{err}"
        );
    }
}
