//! Redis in a container, started through testcontainers from a locally built image.
//!
//! The image is `ebb/redis:local` (built by `deploy/images/build.sh` from Debian's redis-server,
//! since no registry can be reached) or whatever `EBB_REDIS_IMAGE` names, e.g. `redis:7` on a
//! machine with a registry. `scripts/test.sh` builds the image before running the tests.

use std::time::Duration;
use testcontainers::core::{ContainerRequest, IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, CopyTargetOptions, GenericImage, ImageExt};

/// The image used when `EBB_REDIS_IMAGE` is unset.
pub const DEFAULT_IMAGE: &str = "ebb/redis:local";

/// What Redis logs (on stdout) once it serves clients, at every start.
const READY: &str = "Ready to accept connections";

/// Redis's port inside the container.
const PORT: u16 = 6379;

/// The image to run, as `(name, tag)`: `EBB_REDIS_IMAGE` or [`DEFAULT_IMAGE`].
pub fn image() -> (String, String) {
    image_from_env("EBB_REDIS_IMAGE", DEFAULT_IMAGE)
}

/// An image named by the environment variable `var` (blank counts as unset) or `default`, as
/// `(name, tag)`. Shared with the node image of [`crate::containers`] (`EBB_NODE_IMAGE`).
pub fn image_from_env(var: &str, default: &str) -> (String, String) {
    let image = std::env::var(var)
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| default.to_owned());
    split_image(image.trim())
}

/// `name:tag` → `(name, tag)`; no tag means `latest`. A colon before the last `/` belongs to a
/// registry's address (`localhost:5000/redis`), not to a tag.
fn split_image(image: &str) -> (String, String) {
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') && !name.is_empty() => {
            (name.to_owned(), tag.to_owned())
        }
        _ => (image.to_owned(), "latest".to_owned()),
    }
}

/// A Redis server in a container; the container is removed when this is dropped.
#[derive(Debug)]
pub struct Redis {
    container: ContainerAsync<GenericImage>,
    url: String,
}

impl Redis {
    /// Starts a container from [`image()`] and waits until Redis accepts connections. Panics
    /// (saying what to do) when the engine or the image is missing.
    pub async fn run() -> Redis {
        Redis::run_with(|request| request).await
    }

    /// Like [`run`](Self::run), with the container request adjusted by `customize` first (a
    /// container name, labels, ...).
    pub async fn run_with(
        customize: impl FnOnce(ContainerRequest<GenericImage>) -> ContainerRequest<GenericImage>,
    ) -> Redis {
        let (name, tag) = image();
        let request = GenericImage::new(name.as_str(), tag.as_str())
            .with_exposed_port(PORT.tcp())
            .with_wait_for(WaitFor::message_on_stdout(READY))
            .with_startup_timeout(Duration::from_secs(60));
        let container = customize(request).start().await.unwrap_or_else(|e| {
            panic!(
                "starting Redis from {name}:{tag}: {e}\n(build the image with \
                 deploy/images/build.sh; on an engine older than API 1.52, source \
                 scripts/docker-env.sh first, or run everything with scripts/test.sh)"
            )
        });
        let url = url(&container).await;
        Redis { container, url }
    }

    /// Starts Redis with `acl` as its ACL file (`--aclfile`): only the users it defines exist,
    /// and with `user default off` in it, [`url`](Self::url) and [`connection`](Self::connection)
    /// are refused; use [`url_as`](Self::url_as).
    pub async fn run_with_acl_file(acl: String) -> Redis {
        const PATH: &str = "/etc/ebb-acl.conf";
        Redis::run_with(|request| {
            request
                .with_copy_to(
                    CopyTargetOptions::new(PATH).with_mode(0o644),
                    acl.into_bytes(),
                )
                .with_cmd(["--aclfile", PATH])
        })
        .await
    }

    /// Starts Redis serving TLS only (no plain port) with the certificate `ca` signed for
    /// [`crate::tls::SERVER_NAME`], and `acl` as its ACL file. [`url`](Self::url) is then
    /// `rediss://localhost:<mapped port>`; the harness's own [`connection`](Self::connection) does
    /// not speak TLS, so read through [`connection_to`](Self::connection_to).
    pub async fn run_tls(ca: &crate::tls::TestCa, acl: String) -> Redis {
        const DIR: &str = "/etc/ebb-tls";
        let files = [
            ("server.pem", ca.server_cert_pem.clone()),
            ("server.key", ca.server_key_pem.clone()),
            ("ca.pem", ca.ca_pem.clone()),
            ("acl.conf", acl),
        ];
        let mut redis = Redis::run_with(|mut request| {
            for (name, contents) in files {
                request = request.with_copy_to(
                    CopyTargetOptions::new(format!("{DIR}/{name}")).with_mode(0o644),
                    contents.into_bytes(),
                );
            }
            request.with_cmd([
                "--port",
                "0",
                "--tls-port",
                "6379",
                "--tls-cert-file",
                "/etc/ebb-tls/server.pem",
                "--tls-key-file",
                "/etc/ebb-tls/server.key",
                "--tls-ca-cert-file",
                "/etc/ebb-tls/ca.pem",
                "--tls-auth-clients",
                "no",
                "--aclfile",
                "/etc/ebb-tls/acl.conf",
            ])
        })
        .await;
        redis.url = tls_url(&redis.url);
        redis
    }

    /// A connection made the way the ebb binaries make theirs, from a `--redis` URL and
    /// `--redis-ca` (TLS, ACL users).
    pub async fn connection_to(
        url: &str,
        ca: Option<&std::path::Path>,
    ) -> Result<redis::aio::MultiplexedConnection, String> {
        let target = ebb_redis::RedisTarget::parse(url)
            .and_then(|t| t.with_ca(ca))
            .map_err(|e| e.to_string())?;
        let client = ebb_redis::client(&target).map_err(|e| e.to_string())?;
        tokio::time::timeout(
            Duration::from_secs(10),
            client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| format!("connecting to {target} took longer than 10 s"))?
        .map_err(|e| format!("connecting to {target}: {e}"))
    }

    /// `redis://127.0.0.1:<mapped port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `redis://<user>:<password>@127.0.0.1:<mapped port>` (or `rediss://...@localhost:...`).
    pub fn url_as(&self, user: &str, password: &str) -> String {
        let (scheme, rest) = self.url.split_once("://").expect("a URL with a scheme");
        format!("{scheme}://{user}:{password}@{rest}")
    }

    /// The container, for what the wrappers here do not cover (logs, exec, id).
    pub fn container(&self) -> &ContainerAsync<GenericImage> {
        &self.container
    }

    /// A new multiplexed connection to this Redis.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .expect("a valid Redis URL")
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.url))
    }

    /// Freezes the container's processes (cgroup freezer): connections stay open, nothing is
    /// answered, like a Redis stuck in a long pause.
    pub async fn pause(&self) {
        self.container
            .pause()
            .await
            .unwrap_or_else(|e| panic!("pausing Redis: {e}"));
    }

    /// Thaws a paused container; Redis answers again, with its data intact.
    pub async fn unpause(&self) {
        self.container
            .unpause()
            .await
            .unwrap_or_else(|e| panic!("unpausing Redis: {e}"));
    }

    /// Stops Redis (SIGTERM, then SIGKILL after Docker's default 10 s); connections are closed
    /// and, with no persistence, its data is gone.
    pub async fn stop(&self) {
        self.container
            .stop()
            .await
            .unwrap_or_else(|e| panic!("stopping Redis: {e}"));
    }

    /// Starts a stopped container again and waits until Redis accepts connections. Docker may
    /// publish the port on a different host port after a restart: [`url`](Self::url) is updated.
    pub async fn start(&mut self) {
        let before = self.ready_count().await;
        self.container
            .start()
            .await
            .unwrap_or_else(|e| panic!("starting Redis again: {e}"));
        crate::eventually(
            "Redis to accept connections again",
            Duration::from_secs(30),
            || async { (self.ready_count().await > before).then_some(()) },
        )
        .await;
        let tls = self.url.starts_with("rediss://");
        self.url = url(&self.container).await;
        if tls {
            self.url = tls_url(&self.url);
        }
    }

    /// Removes the container (killing Redis if it runs) and waits until it is gone, instead of
    /// leaving that to the drop.
    pub async fn rm(self) -> Result<(), testcontainers::TestcontainersError> {
        self.container.rm().await
    }

    /// How many times Redis has logged that it is ready (the container's logs span restarts).
    async fn ready_count(&self) -> usize {
        let stdout = self
            .container
            .stdout_to_vec()
            .await
            .unwrap_or_else(|e| panic!("reading Redis's logs: {e}"));
        String::from_utf8_lossy(&stdout).matches(READY).count()
    }
}

async fn url(container: &ContainerAsync<GenericImage>) -> String {
    let port = container
        .get_host_port_ipv4(PORT.tcp())
        .await
        .unwrap_or_else(|e| panic!("Redis's mapped port: {e}"));
    format!("redis://127.0.0.1:{port}")
}

/// The TLS URL of the same mapped port, by the one name the test certificate holds.
fn tls_url(plain: &str) -> String {
    plain.replacen(
        "redis://127.0.0.1",
        &format!("rediss://{}", crate::tls::SERVER_NAME),
        1,
    )
}

#[cfg(test)]
mod tests {
    use super::split_image;

    #[test]
    fn splits_name_and_tag() {
        let split = |s| {
            let (name, tag) = split_image(s);
            format!("{name} {tag}")
        };
        assert_eq!(split("ebb/redis:local"), "ebb/redis local");
        assert_eq!(split("redis:7"), "redis 7");
        assert_eq!(split("redis"), "redis latest");
        assert_eq!(split("localhost:5000/redis"), "localhost:5000/redis latest");
        assert_eq!(split("localhost:5000/redis:7"), "localhost:5000/redis 7");
    }
}
