//! A blocking rtnetlink socket: send requests, read their replies.
//!
//! The plugin lives a few milliseconds and makes about ten requests, one
//! after the other; a blocking socket answers each in two system calls,
//! where an async runtime would add task and channel hops to every one.
//! Several requests can be sent before their replies are read: the kernel
//! handles them in order, so later ones may depend on earlier ones, and
//! no time is spent waiting in between.
//!
//! Owns the socket, the sequence numbers and the matching of replies to
//! requests; which messages to send is `mod.rs`'s.

use std::cell::{Cell, RefCell};

use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// A failed kernel operation. (How it reaches the runtime, as a CNI
/// error, is decided above this module: `crate::error`.)
#[derive(Debug)]
pub struct NlError {
    pub op: String,
    pub errno: Option<i32>,
    pub reason: String,
}

impl NlError {
    pub fn io(op: String, e: std::io::Error) -> Self {
        Self {
            op,
            errno: e.raw_os_error(),
            reason: e.to_string(),
        }
    }

    pub fn is(&self, errno: i32) -> bool {
        self.errno == Some(errno)
    }
}

impl std::fmt::Display for NlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.op, self.reason)
    }
}

pub type NlResult<T> = Result<T, NlError>;

/// One request: the message, its flags beyond REQUEST, what it does (for
/// errors), and an errno that counts as success (EEXIST for "ensure").
pub struct Request {
    pub msg: RouteNetlinkMessage,
    pub flags: u16,
    pub op: String,
    pub ok_errno: Option<i32>,
}

impl Request {
    /// A change the kernel acknowledges.
    pub fn change(msg: RouteNetlinkMessage, flags: u16, op: String) -> Self {
        Self {
            msg,
            flags: flags | NLM_F_ACK,
            op,
            ok_errno: None,
        }
    }

    /// A dump: every matching object, then DONE.
    pub fn dump(msg: RouteNetlinkMessage, op: String) -> Self {
        Self {
            msg,
            flags: NLM_F_DUMP,
            op,
            ok_errno: None,
        }
    }

    /// `errno` (e.g. EEXIST) means the wanted state is already there.
    pub fn tolerating(mut self, errno: i32) -> Self {
        self.ok_errno = Some(errno);
        self
    }
}

/// Room for one datagram of replies (the kernel's dump chunks are smaller).
const RX_BUFFER: usize = 64 * 1024;

/// A request sent whose replies are not read yet.
pub struct Pending {
    seq: u32,
    req: Request,
}

/// A blocking NETLINK_ROUTE socket in one network namespace.
pub struct Conn {
    socket: Socket,
    seq: Cell<u32>,
    /// Messages read while looking for another request's replies.
    early: RefCell<Vec<NetlinkMessage<RouteNetlinkMessage>>>,
    /// The receive buffer, allocated once: a fresh 64 KiB per read costs
    /// an mmap and munmap each time with some allocators.
    rx: RefCell<Vec<u8>>,
    /// The namespace this socket lives in ("host", or the path it was
    /// opened from), for error messages.
    pub netns: String,
}

impl Conn {
    /// A socket in the calling thread's current namespace.
    pub fn open(netns: String) -> NlResult<Self> {
        let op = || format!("open netlink socket in {netns}");
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| NlError::io(op(), e))?;
        socket.bind_auto().map_err(|e| NlError::io(op(), e))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| NlError::io(op(), e))?;
        Ok(Self {
            socket,
            seq: Cell::new(0),
            early: RefCell::new(Vec::new()),
            rx: RefCell::new(Vec::with_capacity(RX_BUFFER)),
            netns,
        })
    }

    /// Sends `req` without waiting for its replies.
    pub fn send(&self, req: Request) -> NlResult<Pending> {
        let seq = self.seq.get().wrapping_add(1);
        self.seq.set(seq);
        let mut msg = NetlinkMessage::from(req.msg.clone());
        msg.header.flags = NLM_F_REQUEST | req.flags;
        msg.header.sequence_number = seq;
        msg.finalize();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        self.socket
            .send(&buf, 0)
            .map_err(|e| NlError::io(format!("{} in {}", req.op, self.netns), e))?;
        Ok(Pending { seq, req })
    }

    /// Reads `pending`'s replies: the objects a dump or an echo returned.
    pub fn finish(&self, pending: Pending) -> NlResult<Vec<RouteNetlinkMessage>> {
        let Pending { seq, req } = pending;
        let op = || format!("{} in {}", req.op, self.netns);
        let dump = req.flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        loop {
            for msg in self.next_batch(seq).map_err(|e| NlError::io(op(), e))? {
                match msg.payload {
                    NetlinkPayload::Error(e) => match e.code {
                        None => return Ok(out),
                        Some(code) if Some(-code.get()) == req.ok_errno => return Ok(out),
                        Some(code) => {
                            let errno = -code.get();
                            return Err(NlError {
                                op: op(),
                                errno: Some(errno),
                                reason: std::io::Error::from_raw_os_error(errno).to_string(),
                            });
                        }
                    },
                    NetlinkPayload::Done(_) if dump => return Ok(out),
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    _ => {}
                }
            }
        }
    }

    /// Sends `req` and reads its replies.
    pub fn run(&self, req: Request) -> NlResult<Vec<RouteNetlinkMessage>> {
        let pending = self.send(req)?;
        self.finish(pending)
    }

    /// Sends every request, then reads every reply: the first failure is
    /// returned once all replies are read (the socket stays usable).
    pub fn run_all(&self, reqs: Vec<Request>) -> NlResult<()> {
        let mut pending = Vec::with_capacity(reqs.len());
        for req in reqs {
            pending.push(self.send(req)?);
        }
        let mut first = None;
        for p in pending {
            if let Err(e) = self.finish(p) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// The next messages for `seq`, from earlier reads or the socket.
    fn next_batch(&self, seq: u32) -> std::io::Result<Vec<NetlinkMessage<RouteNetlinkMessage>>> {
        {
            let mut early = self.early.borrow_mut();
            if early.iter().any(|m| m.header.sequence_number == seq) {
                let (mine, rest): (Vec<_>, Vec<_>) = early
                    .drain(..)
                    .partition(|m| m.header.sequence_number == seq);
                *early = rest;
                return Ok(mine);
            }
        }
        let mut buf = self.rx.borrow_mut();
        buf.clear();
        self.socket.recv(&mut *buf, 0)?;
        let mut mine = Vec::new();
        let mut offset = 0;
        while offset < buf.len() {
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[offset..])
                .map_err(|e| std::io::Error::other(format!("decode netlink reply: {e}")))?;
            let len = msg.header.length as usize;
            if len == 0 {
                break;
            }
            offset += (len + 3) & !3;
            if msg.header.sequence_number == seq {
                mine.push(msg);
            } else if msg.header.sequence_number > seq {
                self.early.borrow_mut().push(msg);
            }
        }
        Ok(mine)
    }
}
