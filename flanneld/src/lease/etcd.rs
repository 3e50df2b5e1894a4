//! The etcd lease store: flannel's key layout on etcd v3, so nodes of
//! flannel-rs and of upstream flannel can share one overlay.
//!
//! # Layout (see [`keys`])
//!
//! `<prefix>/config` holds the network configuration (net-conf.json's
//! format); `<prefix>/subnets/10.244.1.0-24` holds flannel's lease value,
//! attached to an etcd lease whose TTL is the lease's lifetime (24 h by
//! default, `--lease-ttl`). The value carries no expiry; etcd deletes the
//! key when its lease runs out.
//!
//! # Semantics (those of the embedded store, on etcd)
//!
//! - network_config: a missing or invalid `<prefix>/config` is logged once,
//!   with the key to write and an example value, and waited for; etcd being
//!   unreachable is waited for too. Only a refusal that retrying cannot fix
//!   (TLS, credentials, permissions) is returned, so flanneld exits with it.
//! - acquire: lists `<prefix>/subnets/`; reuses the in-range lease naming
//!   our `PublicIP` (extra ones are deleted), else `previous` if free, else
//!   a random free subnet. New keys are written with a transaction that
//!   succeeds only if the key does not exist (`CreateRevision == 0`, i.e.
//!   `Version == 0`), our own key only if unchanged since it was read
//!   (`ModRevision == r`). A lost race is not fatal: the list is read again
//!   and another subnet picked, until none is free (`NoFreeSubnet`). The
//!   etcd lease the write needs is granted while the first listing is
//!   read (two round trips in the time of one); unused, it is revoked.
//!   While etcd is unreachable, acquire waits with back-off.
//! - renew: *re-put with a new etcd lease*, as flannel does: grant a lease
//!   of the TTL, put the value (with the current attributes) on it in a
//!   transaction conditioned on the key's `ModRevision`, then revoke the
//!   old etcd lease. One code path covers a plain renewal, changed
//!   attributes (a new VtepMAC) and a key that vanished (recreated, as the
//!   embedded store does); nothing has to remember an etcd lease ID across
//!   restarts; and upstream flannel watchers see exactly what flannel's own
//!   renewals produce. A keep-alive would save one write per TTL (once a
//!   day) but could do none of that. An unexpired key of another `PublicIP`
//!   is `Lost`. Renew makes one attempt; the daemon retries.
//! - release: deletes the key (if it still names our `PublicIP`) and
//!   revokes its etcd lease.
//! - watch: see [`watch`]: a snapshot (one range read), then a watch from
//!   its revision + 1, re-listed and diffed after a compaction, a broken
//!   stream or an outage, so nothing is lost or reported twice. Expiry is
//!   etcd deleting the key, reported as `Removed`. Malformed values are
//!   logged and skipped.
//! - Lease expirations of keys we did not write are not asked of etcd
//!   (one `LeaseTimeToLive` per key cost a round trip per peer at watch
//!   start and for every new key, and ~100 MiB at 5,000 keys). Nothing
//!   reads them: a watched lease ends when etcd deletes its key, which the
//!   watch reports as `Removed` (flannel does not ask either). They are
//!   set to now + the configured TTL; a key without an etcd lease never
//!   expires. Our own lease's expiration is exact (from the grant).
//!
//! Owns the store's requests and their conditions; it does not parse the
//! flags (`conn`), name keys (`keys`) or follow the watch stream (`watch`),
//! and never touches the kernel.

pub mod conn;
mod error;
pub mod keys;
mod watch;

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, PutOptions, Txn, TxnOp,
};
use ipnetwork::{Ipv4Network, Ipv6Network};

pub use self::conn::EtcdConfig;
use self::conn::{call, Failure};
pub use self::error::EtcdError;
use self::keys::{decode, encode, Keys, EXAMPLE_CONFIG};
use super::backoff::Backoff;
use super::{
    choose, skip, Choice, Held, Lease, LeaseAttrs, LeaseError, LeaseStore, LeaseTiming, LeaseWatch,
    Previous,
};
use crate::netconf::NetConfig;

/// Conflicting writers an acquire/renew/release tolerates before giving up
/// (each conflict means another writer made progress).
const MAX_CONFLICTS: usize = 64;
/// How far in the future "never" is, for keys without an etcd lease.
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The etcd lease store. Cheap to clone; connects on first use.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<String>,
    options: ConnectOptions,
    keys: Keys,
    timing: LeaseTiming,
    client: tokio::sync::Mutex<Option<Client>>,
    reachable: AtomicBool,
}

/// One key under `<prefix>/subnets/`.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub subnet: Ipv4Network,
    /// The IPv6 subnet of a dual-stack key (`10.244.1.0-24&fd00::-64`).
    pub ipv6: Option<Ipv6Network>,
    /// `Err` for a value that does not parse (logged by `list`).
    pub attrs: Result<LeaseAttrs, keys::BadLeaseValue>,
    pub lease_id: i64,
    pub mod_revision: i64,
}

impl Entry {
    fn from_kv(keys: &Keys, kv: &KeyValue) -> Option<Entry> {
        let (subnet, ipv6) = keys.subnet_of(kv.key())?;
        Some(Entry {
            subnet,
            ipv6,
            attrs: decode(kv.value()),
            lease_id: kv.lease(),
            mod_revision: kv.mod_revision(),
        })
    }
}

/// Why reading `<prefix>/config` did not give a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigProblem {
    Missing(String),
    Invalid(String),
    Etcd(Failure),
}

/// The condition of a lease write.
#[derive(Debug, Clone, Copy)]
enum Cond {
    /// The key does not exist (`CreateRevision == 0`).
    Absent,
    /// The key is as it was read (`ModRevision == r`).
    Unchanged(i64),
}

impl EtcdStore {
    /// A store on `config`'s endpoints and prefix. Reads the TLS files now
    /// (an error names the flag and the file); connects on first use.
    pub fn new(config: EtcdConfig, timing: LeaseTiming) -> Result<Self, LeaseError> {
        let options = config.connect_options()?;
        Ok(Self {
            inner: Arc::new(Inner {
                endpoints: config.endpoints.clone(),
                options,
                keys: Keys::new(&config.prefix),
                timing,
                client: tokio::sync::Mutex::new(None),
                reachable: AtomicBool::new(true),
            }),
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// The client, connecting (and authenticating) if not done yet.
    pub(crate) async fn client(&self) -> Result<Client, Failure> {
        let mut slot = self.inner.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let what = format!("connect to {}", self.inner.endpoints.join(","));
        let connect = Client::connect(&self.inner.endpoints, Some(self.inner.options.clone()));
        let client = self.track(call(&what, connect).await)?;
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Records whether etcd answered.
    fn track<T>(&self, r: Result<T, Failure>) -> Result<T, Failure> {
        match &r {
            Ok(_) | Err(Failure::Refused(_)) => self.inner.reachable.store(true, Ordering::Relaxed),
            Err(Failure::Unreachable(_)) => self.inner.reachable.store(false, Ordering::Relaxed),
        }
        r
    }

    /// One attempt at reading `<prefix>/config`.
    pub async fn read_config(&self) -> Result<NetConfig, ConfigProblem> {
        let key = self.keys().config();
        let mut c = self.client().await.map_err(ConfigProblem::Etcd)?;
        let resp = self
            .track(call(&format!("get {key}"), c.get(key.as_str(), None)).await)
            .map_err(ConfigProblem::Etcd)?;
        let Some(kv) = resp.kvs().first() else {
            return Err(ConfigProblem::Missing(format!(
                "etcd key {key} is missing: write the network configuration there, e.g. \
                 etcdctl put {key} '{EXAMPLE_CONFIG}'"
            )));
        };
        let text = String::from_utf8_lossy(kv.value());
        NetConfig::parse(&text).map_err(|reason| {
            let reason = crate::chain::chain(&reason);
            ConfigProblem::Invalid(format!(
                "etcd key {key}: {reason} (value {text:?}; example: '{EXAMPLE_CONFIG}')"
            ))
        })
    }

    /// Every key under `<prefix>/subnets/` and the revision of the read.
    pub(crate) async fn list(&self) -> Result<(Vec<Entry>, i64), Failure> {
        let prefix = self.keys().subnets();
        let mut c = self.client().await?;
        let opts = GetOptions::new().with_prefix();
        let resp = self.track(
            call(
                &format!("list {prefix}"),
                c.get(prefix.as_str(), Some(opts)),
            )
            .await,
        )?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let mut entries = Vec::new();
        for kv in resp.kvs() {
            let Some(e) = Entry::from_kv(self.keys(), kv) else {
                tracing::debug!(key = %String::from_utf8_lossy(kv.key()), "ignoring a key not named like a subnet");
                continue;
            };
            if let Err(reason) = &e.attrs {
                let key = self.keys().lease(e.subnet, e.ipv6);
                skip::skipped(&key, &format!("malformed lease: {reason}"));
            }
            entries.push(e);
        }
        Ok((entries, revision))
    }

    /// The lease key of `subnet` (and `ipv6`) as it is now.
    async fn get_entry(
        &self,
        subnet: Ipv4Network,
        ipv6: Option<Ipv6Network>,
    ) -> Result<Option<Entry>, Failure> {
        let key = self.keys().lease(subnet, ipv6);
        let mut c = self.client().await?;
        let resp = self.track(call(&format!("get {key}"), c.get(key.as_str(), None)).await)?;
        Ok(resp
            .kvs()
            .first()
            .and_then(|kv| Entry::from_kv(self.keys(), kv)))
    }

    /// A watched key's expiration, without asking etcd: never for a key
    /// without an etcd lease (`lease_id` 0), else a full TTL from now (the
    /// latest it can be for keys written with this TTL). Informational:
    /// expiry is etcd deleting the key, which the watch reports.
    pub(crate) fn expiry_of(&self, lease_id: i64) -> SystemTime {
        let now = SystemTime::now();
        if lease_id == 0 {
            now + NEVER
        } else {
            now + self.inner.timing.ttl
        }
    }

    /// Grants an etcd lease of the TTL; returns its ID and when it ends.
    async fn grant(&self, key: &str) -> Result<(i64, SystemTime), Failure> {
        let ttl = self.inner.timing.ttl.as_secs().max(1) as i64;
        let mut c = self.client().await?;
        let start = SystemTime::now();
        let op = format!("grant a {ttl} s lease for {key}");
        let r = self.track(call(&op, c.lease_grant(ttl, None)).await)?;
        Ok((r.id(), start + Duration::from_secs(r.ttl().max(0) as u64)))
    }

    /// An acquire's first listing, with the etcd lease its write needs
    /// granted at the same time (unless `grant` holds one already): two
    /// round trips in the time of one. A lease granted is kept in `grant`
    /// even when the listing failed, for the next attempt (acquire revokes
    /// it if it goes unused).
    async fn list_granting(
        &self,
        grant: &mut Option<(i64, SystemTime)>,
    ) -> Result<(Vec<Entry>, i64), Failure> {
        if grant.is_some() {
            return self.list().await;
        }
        let what = format!("a key under {}", self.keys().subnets());
        let (listed, granted) = tokio::join!(self.list(), self.grant(&what));
        match granted {
            Ok(g) => *grant = Some(g),
            // The listing's failure, if any, is the one reported.
            Err(f) if listed.is_ok() => return Err(f),
            Err(_) => {}
        }
        listed
    }

    /// Revokes an etcd lease we no longer use; failures are only logged
    /// (an orphan lease with no key expires by itself).
    async fn revoke(&self, lease_id: i64) {
        if lease_id == 0 {
            return;
        }
        let r = match self.client().await {
            Ok(mut c) => call("revoke lease", c.lease_revoke(lease_id)).await,
            Err(f) => Err(f),
        };
        if let Err(f) = r {
            if !f.message().contains("not found") {
                tracing::debug!("{} (lease {lease_id:x}; it expires by itself)", f.message());
            }
        }
    }

    /// Writes (`Some(value, lease)`) or deletes (`None`) `key` if `cond`
    /// holds. `Ok(false)`: someone else changed it first.
    async fn write(
        &self,
        key: &str,
        cond: Cond,
        put: Option<(&[u8], i64)>,
    ) -> Result<bool, Failure> {
        let compare = match cond {
            Cond::Absent => Compare::create_revision(key, CompareOp::Equal, 0),
            Cond::Unchanged(rev) => Compare::mod_revision(key, CompareOp::Equal, rev),
        };
        let (op, what) = match put {
            Some((value, lease)) => (
                TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease))),
                "put",
            ),
            None => (TxnOp::delete(key, None), "delete"),
        };
        let txn = Txn::new().when([compare]).and_then([op]);
        let mut c = self.client().await?;
        let r = self.track(call(&format!("{what} {key}"), c.txn(txn)).await)?;
        Ok(r.succeeded())
    }

    /// Puts `value` at `key` if `cond` holds, on an etcd lease of our own:
    /// `grant` (granted here on first use) is kept across attempts that
    /// lose to another writer, and cleared once the key is on it or when
    /// the write's outcome is unknown. Once written, the key's previous etcd
    /// lease `old_lease` is revoked. `Ok(None)`: someone else wrote first.
    async fn put_on_lease(
        &self,
        key: &str,
        cond: Cond,
        value: &[u8],
        old_lease: i64,
        grant: &mut Option<(i64, SystemTime)>,
    ) -> Result<Option<SystemTime>, Failure> {
        let (lease_id, expiration) = match *grant {
            Some(g) => g,
            None => *grant.insert(self.grant(key).await?),
        };
        match self.write(key, cond, Some((value, lease_id))).await {
            Ok(true) => {
                *grant = None;
                if old_lease != lease_id {
                    self.revoke(old_lease).await;
                }
                Ok(Some(expiration))
            }
            Ok(false) => Ok(None),
            Err(e) => {
                // The write may have committed before the error (a
                // timeout), so the key may be on this lease: never revoke
                // it. Forget it; if unused it expires by itself, and the
                // next attempt grants a fresh one (so a grant that expired
                // during an outage is not reused forever).
                *grant = None;
                Err(e)
            }
        }
    }

    /// Deletes `e`'s key if unchanged since it was read, and revokes its
    /// etcd lease.
    async fn remove_entry(&self, e: &Entry) -> Result<(), Failure> {
        let key = self.keys().lease(e.subnet, e.ipv6);
        if self
            .write(&key, Cond::Unchanged(e.mod_revision), None)
            .await?
        {
            self.revoke(e.lease_id).await;
        }
        Ok(())
    }

    async fn acquire_once(
        &self,
        config: &NetConfig,
        attrs: &LeaseAttrs,
        previous: Previous,
        grant: &mut Option<(i64, SystemTime)>,
    ) -> Result<Lease, AcquireError> {
        let value = encode(attrs).map_err(|source| {
            let node_ip = attrs.node_ip();
            AcquireError::Lease(EtcdError::Encode { node_ip, source }.into())
        })?;
        for attempt in 0..MAX_CONFLICTS {
            let (entries, _) = if attempt == 0 {
                self.list_granting(grant).await?
            } else {
                self.list().await?
            };
            let taken: HashSet<Ipv4Network> = entries.iter().map(|e| e.subnet).collect();
            let held = entries
                .iter()
                .map(|e| Held {
                    item: e,
                    subnet: e.subnet,
                    ipv6: e.ipv6,
                    node_ip: e.attrs.as_ref().ok().map(|a| a.node_ip()),
                    recency: u128::try_from(e.mod_revision).unwrap_or(0),
                })
                .collect();
            let choice = choose(config, attrs.node_ip(), previous, held, |s| {
                taken.contains(&s)
            })
            .map_err(AcquireError::Lease)?;
            let (subnet, ipv6, cond, old_lease) = match choice {
                Choice::Keep { keep, extras } => {
                    for extra in extras {
                        tracing::warn!(key = %self.keys().lease(extra.subnet, extra.ipv6), kept = %self.keys().lease(keep.subnet, keep.ipv6), node_ip = %attrs.node_ip(),
                            "removing another lease held by the same public IP");
                        self.remove_entry(extra).await?;
                    }
                    (
                        keep.subnet,
                        keep.ipv6,
                        Cond::Unchanged(keep.mod_revision),
                        keep.lease_id,
                    )
                }
                Choice::Take {
                    subnet,
                    ipv6,
                    stale,
                } => {
                    for old in stale {
                        tracing::info!(key = %self.keys().lease(old.subnet, old.ipv6), node_ip = %attrs.node_ip(),
                            "removing this public IP's lease that no longer fits the network configuration");
                        self.remove_entry(old).await?;
                    }
                    (subnet, ipv6, Cond::Absent, 0)
                }
            };
            let key = self.keys().lease(subnet, ipv6);
            if let Some(expiration) = self
                .put_on_lease(&key, cond, &value, old_lease, grant)
                .await?
            {
                return Ok(Lease {
                    subnet,
                    ipv6_subnet: ipv6,
                    attrs: attrs.clone(),
                    expiration,
                });
            }
            tracing::info!(%subnet, "another node wrote {key} first; picking again");
        }
        let prefix = self.keys().subnets();
        let tries = MAX_CONFLICTS;
        Err(AcquireError::Lease(
            EtcdError::AcquireConflicts { prefix, tries }.into(),
        ))
    }
}

/// A failed acquire attempt: etcd's fault (maybe retried) or a verdict.
enum AcquireError {
    Etcd(Failure),
    Lease(LeaseError),
}

impl From<Failure> for AcquireError {
    fn from(f: Failure) -> Self {
        AcquireError::Etcd(f)
    }
}

#[async_trait::async_trait]
impl LeaseStore for EtcdStore {
    async fn network_config(&self) -> Result<NetConfig, LeaseError> {
        let mut backoff = Backoff::new("etcd", format!("read {}", self.keys().config()));
        loop {
            let (state, msg) = match self.read_config().await {
                Ok(config) => {
                    backoff.succeeded();
                    return Ok(config);
                }
                Err(ConfigProblem::Etcd(f @ Failure::Refused(_))) => return Err(f.into()),
                Err(ConfigProblem::Etcd(f)) => ("unreachable".to_string(), f.message().to_string()),
                Err(ConfigProblem::Missing(m)) => ("missing".to_string(), m),
                Err(ConfigProblem::Invalid(m)) => (m.clone(), m),
            };
            backoff.failed(&state, &msg).await;
        }
    }

    async fn acquire_with(
        &self,
        config: &NetConfig,
        attrs: &LeaseAttrs,
        previous: Previous,
    ) -> Result<Lease, LeaseError> {
        let mut backoff = Backoff::new(
            "etcd",
            format!("acquire a lease under {}", self.keys().subnets()),
        );
        let mut grant = None;
        let result = loop {
            match self.acquire_once(config, attrs, previous, &mut grant).await {
                Ok(lease) => {
                    backoff.succeeded();
                    break Ok(lease);
                }
                Err(AcquireError::Etcd(f @ Failure::Unreachable(_))) => {
                    backoff.failed("unreachable", f.message()).await
                }
                Err(AcquireError::Etcd(f)) => break Err(f.into()),
                Err(AcquireError::Lease(e)) => break Err(e),
            }
        };
        if let Some((unused, _)) = grant {
            self.revoke(unused).await;
        }
        result
    }

    async fn renew(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        let key = self.keys().lease(lease.subnet, lease.ipv6_subnet);
        let value = encode(&lease.attrs).map_err(|source| EtcdError::Encode {
            node_ip: lease.attrs.node_ip(),
            source,
        })?;
        let ours = lease.attrs.node_ip();
        let mut grant: Option<(i64, SystemTime)> = None;
        let result = async {
            for _ in 0..MAX_CONFLICTS {
                let (cond, old_lease) = match self.get_entry(lease.subnet, lease.ipv6_subnet).await? {
                    None => {
                        tracing::warn!(%key, "our lease key vanished; the subnet is free, recreating it");
                        (Cond::Absent, 0)
                    }
                    Some(e) => match &e.attrs {
                        Ok(a) if a.node_ip() == ours => (Cond::Unchanged(e.mod_revision), e.lease_id),
                        Ok(a) => {
                            return Err(LeaseError::Lost {
                                subnet: lease.key(),
                                holder: a.node_ip().to_string(),
                            })
                        }
                        Err(reason) => {
                            tracing::warn!(%key, "our lease key holds a malformed value ({reason}); overwriting it");
                            (Cond::Unchanged(e.mod_revision), e.lease_id)
                        }
                    },
                };
                if let Some(expiration) = self
                    .put_on_lease(&key, cond, &value, old_lease, &mut grant)
                    .await?
                {
                    return Ok(Lease {
                        subnet: lease.subnet,
                        ipv6_subnet: lease.ipv6_subnet,
                        attrs: lease.attrs.clone(),
                        expiration,
                    });
                }
            }
            let (op, tries) = ("renew", MAX_CONFLICTS);
            Err(EtcdError::Conflicts { op, key, tries }.into())
        }
        .await;
        if let Some((unused, _)) = grant {
            self.revoke(unused).await;
        }
        result
    }

    async fn release(&self, lease: &Lease) -> Result<(), LeaseError> {
        let key = self.keys().lease(lease.subnet, lease.ipv6_subnet);
        for _ in 0..MAX_CONFLICTS {
            let Some(e) = self.get_entry(lease.subnet, lease.ipv6_subnet).await? else {
                return Ok(());
            };
            match &e.attrs {
                Ok(a) if a.node_ip() == lease.attrs.node_ip() => {
                    if self
                        .write(&key, Cond::Unchanged(e.mod_revision), None)
                        .await?
                    {
                        self.revoke(e.lease_id).await;
                        return Ok(());
                    }
                }
                Ok(a) => {
                    tracing::info!(%key, holder = %a.node_ip(), "not releasing a lease another node holds now");
                    return Ok(());
                }
                Err(_) => {
                    tracing::info!(%key, "not releasing a key whose value is not ours");
                    return Ok(());
                }
            }
        }
        let (op, tries) = ("release", MAX_CONFLICTS);
        Err(EtcdError::Conflicts { op, key, tries }.into())
    }

    async fn watch(&self) -> Result<LeaseWatch, LeaseError> {
        watch::start(self.clone()).await
    }

    /// False after a request found etcd unreachable, until one succeeds.
    fn is_reachable(&self) -> bool {
        self.inner.reachable.load(Ordering::Relaxed)
    }
}
