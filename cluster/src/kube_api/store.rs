//! The objects and their resourceVersions: one global counter (as etcd's
//! revision), a map per kind, a bounded history of changes (the watch
//! window, with its `floor`: the oldest version a watch or an exact read
//! may start from) and a broadcast of every change to open watches.
//!
//! Every write happens under one lock, which also covers pushing the change
//! to the history and the broadcast, so a reader that subscribes and reads
//! the history under the same lock misses nothing and sees nothing twice.
//!
//! No HTTP and no selectors here: only objects, versions, history and the
//! broadcast.

use bytes::Bytes;
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use tokio::sync::broadcast;

use super::object::{self, Kind};
use super::respond::ApiError;

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

impl ChangeType {
    pub fn word(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// One change, at the resourceVersion it made.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub kind: Kind,
    pub ty: ChangeType,
    /// The object after the change (for a deletion: its last state, with
    /// the deletion's resourceVersion).
    pub obj: Arc<Value>,
    /// The object before (none for an addition).
    pub prev: Option<Arc<Value>>,
    line: OnceLock<Bytes>,
}

impl Change {
    /// The watch event line, serialized once for every watcher.
    pub fn line(&self) -> Bytes {
        self.line
            .get_or_init(|| event_line(self.ty.word(), &self.obj))
            .clone()
    }
}

/// `{"type":TYPE,"object":OBJ}\n`.
pub fn event_line(ty: &str, obj: &Value) -> Bytes {
    let mut v = Vec::with_capacity(64);
    v.extend_from_slice(b"{\"type\":\"");
    v.extend_from_slice(ty.as_bytes());
    v.extend_from_slice(b"\",\"object\":");
    // Serializing a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut v, obj);
    v.extend_from_slice(b"}\n");
    Bytes::from(v)
}

/// An object and its store key.
pub type Keyed = (String, Arc<Value>);

/// Where a read of a kind's objects is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadAt {
    Latest,
    Exact(u64),
}

/// A watch's start: the state it begins from and its event source.
pub struct WatchStart {
    /// The resourceVersion the watch starts after.
    pub rv: u64,
    /// The objects to send as ADDED first (snapshot watches).
    pub initial: Vec<Arc<Value>>,
    /// Changes after `rv` from the history (exact-version watches).
    pub replay: Vec<Arc<Change>>,
    pub rx: broadcast::Receiver<Arc<Change>>,
}

struct Inner {
    rv: u64,
    floor: u64,
    objects: [BTreeMap<String, Arc<Value>>; 2],
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
}

pub struct Store {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Change>>,
}

impl Store {
    pub fn new(history_limit: usize) -> Store {
        let (tx, _) = broadcast::channel(history_limit.clamp(1024, 1 << 16));
        Store {
            inner: Mutex::new(Inner {
                rv: 1,
                floor: 1,
                objects: [BTreeMap::new(), BTreeMap::new()],
                history: VecDeque::new(),
                history_limit: history_limit.max(1),
            }),
            tx,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every
        // write completes before the next statement can panic).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    pub fn get(&self, kind: Kind, key: &str) -> Option<Arc<Value>> {
        self.lock().objects[kind.index()].get(key).cloned()
    }

    pub fn count(&self, kind: Kind) -> usize {
        self.lock().objects[kind.index()].len()
    }

    /// Creates `obj` (stamped by [`object::prepare_create`]); 409 if its
    /// key exists.
    pub fn create(
        &self,
        kind: Kind,
        url_ns: Option<&str>,
        mut obj: Value,
    ) -> Result<Arc<Value>, ApiError> {
        let mut g = self.lock();
        let rv = g.rv + 1;
        let key = object::prepare_create(kind, url_ns, &mut obj, rv)?;
        if g.objects[kind.index()].contains_key(&key) {
            return Err(ApiError::already_exists(kind, object::name(&obj)));
        }
        let obj = Arc::new(obj);
        g.objects[kind.index()].insert(key, obj.clone());
        self.push(&mut g, rv, kind, ChangeType::Added, obj.clone(), None);
        Ok(obj)
    }

    /// Replaces the object at `key` by `f(current)`. A `resourceVersion`
    /// left in the result must be the current one (409 otherwise); a
    /// result equal to the current object changes nothing (no new version,
    /// no event), as the apiserver skips no-op writes.
    pub fn update(
        &self,
        kind: Kind,
        key: &str,
        f: impl FnOnce(&Value) -> Result<Value, ApiError>,
    ) -> Result<Arc<Value>, ApiError> {
        let mut g = self.lock();
        let name = key.rsplit('/').next().unwrap_or(key);
        let cur = g.objects[kind.index()]
            .get(key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(kind, name))?;
        let mut new = f(&cur)?;
        if !new.is_object() {
            return Err(ApiError::bad_request(format!(
                "the new {} {name:?} is not a JSON object",
                kind.kind()
            )));
        }
        let cur_rv = object::meta_str(&cur, "resourceVersion").unwrap_or("");
        match object::meta_str(&new, "resourceVersion") {
            Some(rv) if !rv.is_empty() && rv != cur_rv => {
                return Err(ApiError::conflict(kind, name))
            }
            _ => {}
        }
        object::meta_mut(&mut new).insert("resourceVersion".into(), cur_rv.into());
        if new == *cur {
            return Ok(cur);
        }
        let rv = g.rv + 1;
        object::set_resource_version(&mut new, rv);
        let new = Arc::new(new);
        g.objects[kind.index()].insert(key.to_owned(), new.clone());
        self.push(
            &mut g,
            rv,
            kind,
            ChangeType::Modified,
            new.clone(),
            Some(cur),
        );
        Ok(new)
    }

    /// Creates or replaces `obj` whatever its resourceVersion (test setup).
    pub fn put(&self, kind: Kind, obj: Value) -> Result<Arc<Value>, ApiError> {
        let key = object::key_of(kind, &obj);
        let exists = self.get(kind, &key).is_some();
        if !exists {
            match self.create(kind, None, obj.clone()) {
                Err(e) if e.code == 409 => {}
                other => return other,
            }
        }
        self.update(kind, &key, |cur| {
            let mut new = obj;
            object::meta_mut(&mut new).remove("resourceVersion");
            object::carry_identity(cur, &mut new);
            Ok(new)
        })
    }

    /// Removes the object at `key`; returns its last state, stamped with
    /// the deletion's resourceVersion (as the DELETED event carries it).
    pub fn delete(&self, kind: Kind, key: &str) -> Result<Arc<Value>, ApiError> {
        let mut g = self.lock();
        let name = key.rsplit('/').next().unwrap_or(key);
        let cur = g.objects[kind.index()]
            .remove(key)
            .ok_or_else(|| ApiError::not_found(kind, name))?;
        let rv = g.rv + 1;
        let mut last = (*cur).clone();
        object::set_resource_version(&mut last, rv);
        let last = Arc::new(last);
        self.push(
            &mut g,
            rv,
            kind,
            ChangeType::Deleted,
            last.clone(),
            Some(cur),
        );
        Ok(last)
    }

    /// Makes every resourceVersion handed out so far too old: the version
    /// moves on by one and the history is dropped, as after an etcd
    /// compaction with the watch cache's window gone.
    pub fn compact(&self) {
        let mut g = self.lock();
        g.rv += 1;
        g.floor = g.rv;
        g.history.clear();
    }

    /// The objects of `kind` with keys `>= start`, in key order, as they
    /// were at `at`, and the version read. 410 when `at` is older than the
    /// history, 504 when it is newer than the server.
    pub fn read(&self, kind: Kind, at: ReadAt, start: &str) -> Result<(u64, Vec<Keyed>), ApiError> {
        let g = self.lock();
        let map = &g.objects[kind.index()];
        let range =
            map.range::<str, _>((std::ops::Bound::Included(start), std::ops::Bound::Unbounded));
        let at = match at {
            ReadAt::Latest => {
                let items = range.map(|(k, v)| (k.clone(), v.clone())).collect();
                return Ok((g.rv, items));
            }
            ReadAt::Exact(at) => at,
        };
        if at > g.rv {
            return Err(ApiError::too_large_rv(at, g.rv));
        }
        if at < g.floor {
            return Err(ApiError::expired(format!(
                "The resourceVersion for the provided list is too old: {at} (oldest: {})",
                g.floor
            )));
        }
        // Undo the changes made after `at`: per key, the state before the
        // earliest later change is the state at `at`.
        let mut then: BTreeMap<String, Option<Arc<Value>>> = BTreeMap::new();
        for c in g.history.iter().filter(|c| c.rv > at && c.kind == kind) {
            let key = object::key_of(kind, &c.obj);
            if key.as_str() >= start {
                then.entry(key).or_insert_with(|| c.prev.clone());
            }
        }
        let mut items: Vec<Keyed> = range
            .filter(|(k, _)| !then.contains_key(k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        items.extend(then.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
        items.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((at, items))
    }

    /// Starts a watch: `None` for a snapshot of now (objects to send as
    /// ADDED when `initial`), `Some(rv)` for the changes after `rv`.
    pub fn watch(
        &self,
        kind: Kind,
        from: Option<u64>,
        initial: bool,
    ) -> Result<WatchStart, ApiError> {
        let g = self.lock();
        let rx = self.tx.subscribe();
        match from {
            None => {
                let objs = if initial {
                    g.objects[kind.index()].values().cloned().collect()
                } else {
                    Vec::new()
                };
                Ok(WatchStart {
                    rv: g.rv,
                    initial: objs,
                    replay: Vec::new(),
                    rx,
                })
            }
            Some(rv) if rv < g.floor => Err(ApiError::expired(format!(
                "too old resource version: {rv} ({})",
                g.floor
            ))),
            Some(rv) if rv > g.rv => Err(ApiError::too_large_rv(rv, g.rv)),
            Some(rv) => {
                let replay = g
                    .history
                    .iter()
                    .filter(|c| c.rv > rv && c.kind == kind)
                    .cloned()
                    .collect();
                Ok(WatchStart {
                    rv,
                    initial: Vec::new(),
                    replay,
                    rx,
                })
            }
        }
    }

    /// All objects of `kind` now, and a receiver of every later change.
    pub fn subscribe(&self, kind: Kind) -> (Vec<Arc<Value>>, broadcast::Receiver<Arc<Change>>) {
        let g = self.lock();
        (
            g.objects[kind.index()].values().cloned().collect(),
            self.tx.subscribe(),
        )
    }

    fn push(
        &self,
        g: &mut Inner,
        rv: u64,
        kind: Kind,
        ty: ChangeType,
        obj: Arc<Value>,
        prev: Option<Arc<Value>>,
    ) {
        g.rv = rv;
        let change = Arc::new(Change {
            rv,
            kind,
            ty,
            obj,
            prev,
            line: OnceLock::new(),
        });
        g.history.push_back(change.clone());
        while g.history.len() > g.history_limit {
            if let Some(old) = g.history.pop_front() {
                g.floor = old.rv;
            }
        }
        // No receiver is fine: nobody watches.
        let _ = self.tx.send(change);
    }
}
