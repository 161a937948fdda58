//! Reading the app: its health answer (200 with a count, 503 while it drains) and, where the
//! count lives elsewhere, a Prometheus sample. Every answer that is not a whole non-negative
//! count is an error naming what was wrong, never a made-up number.

use crate::Args;
use std::time::Duration;

/// How long one health request may take.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest health answer read.
const HEALTH_MAX_BYTES: usize = 64 * 1024;

/// What one health read said.
pub enum Health {
    Healthy(usize),
    Draining(Option<usize>),
}

/// Where the app's health and count are read.
pub struct Probe {
    pub health: HttpUrl,
    /// The JSON field of a healthy answer that holds the count.
    field: String,
    /// Or: the Prometheus endpoint and metric that hold it.
    metrics: Option<(HttpUrl, String)>,
}

impl Probe {
    pub fn new(args: &Args) -> Result<Probe, String> {
        let metrics = match (&args.metrics_url, &args.connections_metric) {
            (Some(url), Some(name)) => Some((HttpUrl::parse("--metrics-url", url)?, name.clone())),
            _ => None,
        };
        Ok(Probe {
            health: HttpUrl::parse("--health-url", &args.health_url)?,
            field: args.connections_field.clone(),
            metrics,
        })
    }

    /// One look: 200 with a count (a non-negative integer), or 503 (with a count if one can
    /// be read); anything else is an error that names what was wrong.
    pub async fn read(&self) -> Result<Health, String> {
        let (status, body) = self.health.get().await?;
        let count = async {
            match &self.metrics {
                Some((url, name)) => {
                    let (status, text) = url.get().await?;
                    if status != 200 {
                        return Err(format!("{} answered {status}", url.display));
                    }
                    metric_count(&String::from_utf8_lossy(&text), name)
                }
                None => json_count(&body, &self.field),
            }
        };
        match status {
            200 => count.await.map(Health::Healthy),
            503 => Ok(Health::Draining(count.await.ok())),
            other => Err(format!("it answered {other}")),
        }
    }
}

/// The non-negative integer `field` of a JSON object.
fn json_count(body: &[u8], field: &str) -> Result<usize, String> {
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let n = json
        .get(field)
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| format!("the answer has no non-negative integer {field:?}"))?;
    usize::try_from(n).map_err(|_| format!("{field} {n} is too large"))
}

/// The sum of the samples of metric `name` in Prometheus text (`name 3` or `name{...} 3`),
/// each a non-negative whole number.
fn metric_count(text: &str, name: &str) -> Result<usize, String> {
    let mut total: Option<u64> = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = match rest.chars().next() {
            Some(' ') => rest.trim(),
            Some('{') => rest.rsplit_once('}').map_or("", |(_, v)| v.trim()),
            _ => continue,
        };
        let value = value.split_whitespace().next().unwrap_or("");
        let n: f64 = value
            .parse()
            .map_err(|_| format!("{name} has the value {value:?}, not a number"))?;
        if !(n.is_finite() && n >= 0.0 && n.fract() == 0.0 && n <= u32::MAX as f64) {
            return Err(format!("{name} is {value}, not a connection count"));
        }
        total = Some(total.unwrap_or(0) + n as u64);
    }
    let total = total.ok_or_else(|| format!("no sample of {name} in the metrics"))?;
    usize::try_from(total).map_err(|_| format!("{name} {total} is too large"))
}

/// `http://host:port/path`.
pub struct HttpUrl {
    authority: String,
    path: String,
    pub display: String,
}

impl HttpUrl {
    pub fn parse(flag: &str, url: &str) -> Result<HttpUrl, String> {
        let bad = |why: &str| format!("{flag} {url:?}: {why}");
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("expected http://host:port/path"))?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.is_empty() || !authority.contains(':') {
            return Err(bad("expected a host and a port"));
        }
        Ok(HttpUrl {
            authority: authority.to_owned(),
            path: if path.is_empty() { "/" } else { path }.to_owned(),
            display: url.to_owned(),
        })
    }

    /// A GET, bounded by [`HEALTH_TIMEOUT`].
    pub async fn get(&self) -> Result<(u16, Vec<u8>), String> {
        tokio::time::timeout(HEALTH_TIMEOUT, self.request(http::Method::GET))
            .await
            .map_err(|_| "timed out".to_owned())?
    }

    pub async fn request(&self, method: http::Method) -> Result<(u16, Vec<u8>), String> {
        use http_body_util::BodyExt;
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let driver = tokio::spawn(connection);
        let request = http::Request::builder()
            .method(method)
            .uri(&self.path)
            .header(http::header::HOST, &self.authority)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let status = response.status().as_u16();
        let body = http_body_util::Limited::new(response.into_body(), HEALTH_MAX_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes()
            .to_vec();
        driver.abort();
        Ok((status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_is_read_from_json_or_prometheus_text_and_nothing_else_is_one() {
        assert_eq!(
            json_count(br#"{"status":"healthy","connections":3}"#, "connections"),
            Ok(3)
        );
        for bad in [
            &b"{}"[..],
            b"[]",
            b"not json",
            br#"{"connections":-1}"#,
            br#"{"connections":"3"}"#,
            br#"{"connections":1.5}"#,
        ] {
            assert!(json_count(bad, "connections").is_err(), "{bad:?}");
        }
        let text = "# TYPE app_connections gauge\napp_connections_total 99\napp_connections{shard=\"a\"} 2\napp_connections{shard=\"b\"} 3 1700000000\n";
        assert_eq!(metric_count(text, "app_connections"), Ok(5));
        assert_eq!(
            metric_count("app_connections 7\n", "app_connections"),
            Ok(7)
        );
        assert!(metric_count("other 1\n", "app_connections").is_err());
        for bad in ["NaN", "+Inf", "-1", "1.5", "1e30", "x"] {
            let text = format!("app_connections {bad}\n");
            assert!(metric_count(&text, "app_connections").is_err(), "{bad}");
        }
    }

    #[test]
    fn http_urls_need_a_host_and_a_port() {
        let url = HttpUrl::parse("--health-url", "http://127.0.0.1:8080/health").unwrap();
        assert_eq!(
            (url.authority.as_str(), url.path.as_str()),
            ("127.0.0.1:8080", "/health")
        );
        assert_eq!(HttpUrl::parse("f", "http://h:1").unwrap().path, "/");
        for bad in ["https://h:1/", "h:1/health", "http:///x", "http://host/x"] {
            assert!(HttpUrl::parse("f", bad).is_err(), "{bad}");
        }
    }
}
