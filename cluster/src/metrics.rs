//! flanneld's `/metrics`, scraped from inside a node's netns (where the
//! cluster's flanneld serves it on `127.0.0.1:`[`PORT`]) and parsed with
//! `prometheus-parse`; and raw HTTP/1.1 exchanges for the server's tests.
//!
//! It reads what flanneld serves; it never sets a metric, and it connects
//! only from inside the node's namespace.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::netns::NetNs;

/// The port every cluster node's flanneld serves /healthz, /readyz and
/// /metrics on, at 127.0.0.1 in the node's netns.
pub const PORT: u16 = 9109;

/// A parsed scrape.
pub struct Scrape {
    pub text: String,
    pub parsed: prometheus_parse::Scrape,
}

impl Scrape {
    /// Parses `text` as Prometheus would (errors name the line).
    pub fn parse(text: String) -> Result<Scrape, String> {
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let parsed = prometheus_parse::Scrape::parse(lines)
            .map_err(|e| format!("parse the /metrics scrape: {e}"))?;
        Ok(Scrape { text, parsed })
    }

    /// The value of the sample `name` whose labels include `labels`, if any
    /// (a histogram's `_count`/`_sum` are looked up by those names too).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples(name)
            .into_iter()
            .find(|(l, _)| {
                labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, v)| v)
    }

    /// Every sample of `name`: its labels and value. Histograms and
    /// counters are read back from the text, where their `_count`,
    /// `_sum`, `_bucket` and `_total` lines are samples of their own.
    pub fn samples(&self, name: &str) -> Vec<(std::collections::HashMap<String, String>, f64)> {
        let mut out = Vec::new();
        for line in self.text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let (metric, labels) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                continue;
            }
            let Ok(v) = value.parse::<f64>() else {
                continue;
            };
            let labels = labels
                .split("\",")
                .filter(|kv| !kv.is_empty())
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_owned(), v.trim_matches('"').to_owned()))
                })
                .collect();
            out.push((labels, v));
        }
        out
    }

    /// Every metric name a query may use: each sample's, and for each
    /// declared family (`# TYPE`, which may have no series yet, e.g. a
    /// labelled counter nothing has incremented) the names of its samples
    /// (`_total`; `_bucket`, `_count`, `_sum`).
    pub fn names(&self) -> std::collections::BTreeSet<String> {
        let mut names: std::collections::BTreeSet<String> = self
            .parsed
            .samples
            .iter()
            .map(|s| s.metric.clone())
            .collect();
        for line in self.text.lines() {
            if let Some(decl) = line.strip_prefix("# TYPE ") {
                let mut words = decl.split_whitespace();
                let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                    continue;
                };
                let suffixes: &[&str] = match kind {
                    "counter" => &["_total"],
                    "histogram" => &["_bucket", "_count", "_sum"],
                    _ => &[""],
                };
                for s in suffixes {
                    names.insert(format!("{name}{s}"));
                }
            } else if !line.starts_with('#') {
                let series = line.split([' ', '{']).next().unwrap_or("");
                if !series.is_empty() {
                    names.insert(series.to_owned());
                }
            }
        }
        names
    }
}

/// `GET path` on the node's flanneld; status and body.
pub fn get(ns: &NetNs, path: &str) -> Result<(u16, String), String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let reply = exchange(ns, PORT, vec![request.into_bytes()], Duration::from_secs(5))?;
    split_reply(&reply)
}

/// Scrapes and parses the node's `/metrics`.
pub fn scrape(ns: &NetNs) -> Result<Scrape, String> {
    let (status, body) = get(ns, "/metrics")?;
    if status != 200 {
        return Err(format!("GET /metrics: status {status}: {body}"));
    }
    Scrape::parse(body)
}

/// Connects to 127.0.0.1:`port` in `ns`, writes `parts` one by one
/// (each its own segment), and reads until the server closes or
/// `timeout` passes without data; what the server sent.
pub fn exchange(
    ns: &NetNs,
    port: u16,
    parts: Vec<Vec<u8>>,
    timeout: Duration,
) -> Result<String, String> {
    ns.run(move || {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut s = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        for part in &parts {
            // The server may answer and close before all is written.
            if s.write_all(part).and_then(|()| s.flush()).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        Ok(String::from_utf8_lossy(&buf).into_owned())
    })
}

/// The status code and body of an HTTP/1.x reply.
pub fn split_reply(reply: &str) -> Result<(u16, String), String> {
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {reply:?}"))?;
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
