//! The admin endpoints: the test-facing controls of a stand-in that runs
//! as a process (`kube-api-standin --admin-listen`), under `/_standin/`,
//! served only on the admin listener, which faults never touch and whose
//! requests the request log leaves out (it is how a test reaches the API
//! while the nodes' listener is down). The bearer token is required as on
//! every other path. Every answer is JSON.
//!
//! ```text
//! GET  /_standin/status                          resourceVersion, openWatches, requests, down, nodeIpamPaused
//! GET  /_standin/requests                        {"total": N, "items": [RequestRecord...]} (the nodes' listener only)
//! POST /_standin/requests/clear
//! POST /_standin/faults/drop-watches             every open watch is cut
//! POST /_standin/faults/expire-resource-versions a compaction: resuming an older version gets 410
//! POST /_standin/faults/down?mode=close|unavailable
//! POST /_standin/faults/up
//! POST /_standin/faults/fail-next?n=N            500 for the next N requests
//! POST /_standin/faults/fail-all?on=true|false
//! POST /_standin/faults/delay?ms=N
//! POST /_standin/faults/clear                    failures, delay and downtime
//! POST /_standin/ipam/pause                      the node IPAM controller hands out nothing...
//! POST /_standin/ipam/resume                     ...until resumed (kube-controller-manager down)
//! ```

use hyper::Method;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::faults::DownMode;
use super::http::Shared;
use super::respond::{self, ApiError, Resp};
use super::routes::Query;

/// The prefix of every admin path.
pub const PREFIX: &str = "/_standin/";

/// The answer to one authenticated admin request.
pub fn route(shared: &Arc<Shared>, method: &Method, path: &str, q: &Query) -> Resp {
    let what = path.strip_prefix(PREFIX).unwrap_or("");
    let result = match (method.as_str(), what) {
        ("GET", "status") => Ok(status(shared)),
        ("GET", "requests") => Ok(requests(shared)),
        ("POST", _) => post(shared, what, q),
        (_, "status" | "requests") => Err(ApiError::method_not_allowed(method.as_str())),
        _ => Err(ApiError::path_not_found()),
    };
    match result {
        Ok(v) => respond::json_value(200, &v),
        Err(e) => respond::error(&e),
    }
}

fn status(shared: &Shared) -> Value {
    let down = shared.faults.down_mode().map(|m| match m {
        DownMode::CloseConnections => "close",
        DownMode::Unavailable => "unavailable",
    });
    json!({
        "resourceVersion": shared.store.resource_version(),
        "openWatches": shared.open_watches.load(Ordering::SeqCst),
        "requests": shared.log.total(),
        "down": down,
        "nodeIpamPaused": *shared.ipam_paused.borrow(),
    })
}

fn requests(shared: &Shared) -> Value {
    json!({"total": shared.log.total(), "items": shared.log.all()})
}

fn done() -> Value {
    json!({"ok": true})
}

fn param<'a>(q: &'a Query, name: &str) -> Result<&'a str, ApiError> {
    q.get(name)
        .ok_or_else(|| ApiError::bad_request(format!("missing query parameter {name:?}")))
}

fn number(q: &Query, name: &str) -> Result<u64, ApiError> {
    let s = param(q, name)?;
    s.parse()
        .map_err(|_| ApiError::bad_request(format!("{name}={s:?}: not a number")))
}

fn post(shared: &Shared, what: &str, q: &Query) -> Result<Value, ApiError> {
    let faults = &shared.faults;
    match what {
        "requests/clear" => shared.log.clear(),
        "faults/drop-watches" => faults.drop_watches(),
        "faults/expire-resource-versions" => shared.store.compact(),
        "faults/down" => {
            let mode = match param(q, "mode")? {
                "close" => DownMode::CloseConnections,
                "unavailable" => DownMode::Unavailable,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "mode={other:?}: use close or unavailable"
                    )))
                }
            };
            faults.set_down(Some(mode));
        }
        "faults/up" => faults.set_down(None),
        "faults/fail-next" => faults.fail_next(
            u32::try_from(number(q, "n")?).map_err(|_| ApiError::bad_request("n is too large"))?,
        ),
        "faults/fail-all" => {
            faults.fail_all(super::watch::parse_bool("on", param(q, "on")?)?);
        }
        "faults/delay" => faults.set_delay(Duration::from_millis(number(q, "ms")?)),
        "faults/clear" => faults.clear(),
        "ipam/pause" => {
            shared.ipam_paused.send_replace(true);
        }
        "ipam/resume" => {
            shared.ipam_paused.send_replace(false);
        }
        _ => return Err(ApiError::path_not_found()),
    }
    Ok(done())
}
