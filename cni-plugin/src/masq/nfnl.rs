//! The few nf_tables netlink messages the per-pod masquerade path needs:
//! add or delete one set element (NFT_MSG_NEWSETELEM / NFT_MSG_DELSETELEM,
//! each in its own NFNL batch, acknowledged) and list a set's keys
//! (NFT_MSG_GETSETELEM dump). Encoded by hand from the kernel's uapi
//! headers (`linux/netfilter/nfnetlink.h`, `linux/netfilter/nf_tables.h`)
//! and libnftnl's user-data layout; this module knows nothing of tables,
//! chains, rules or the CNI: it owns the wire format and the socket only.

use std::io;

use rtnetlink::sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

// linux/netlink.h
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
const NLMSG_HDRLEN: usize = 16;
// linux/netfilter/nfnetlink.h
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNETLINK_V0: u8 = 0;
const NFGENMSG_LEN: usize = 4;
// linux/netfilter/nf_tables.h
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_DATA_VALUE: u16 = 1;
// libnftnl/udata.h: the element's comment, a type-length-value record
// (one byte each) holding the NUL-terminated string, as nft writes it.
const NFTNL_UDATA_SET_ELEM_COMMENT: u8 = 0;
/// nft's limit on a comment (NFT_USERDATA_MAXLEN is 256 bytes of TLVs;
/// nft itself refuses comments over 128 characters).
pub const COMMENT_MAX: usize = 128;

/// The table family of an element's set (linux/netfilter.h NFPROTO_*).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Ipv4 = 2,
    Ipv6 = 10,
}

/// Where an element goes: a set in a table of a family.
#[derive(Clone, Copy, Debug)]
pub struct SetRef<'a> {
    pub family: Family,
    pub table: &'a str,
    pub set: &'a str,
}

/// A message under construction: header, nfgenmsg, attributes.
struct Msg {
    buf: Vec<u8>,
    start: usize,
    nests: Vec<usize>,
}

impl Msg {
    fn begin(buf: Vec<u8>, kind: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> Self {
        let mut buf = buf;
        let start = buf.len();
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in end()
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel's
        buf.extend_from_slice(&[family, NFNETLINK_V0]);
        buf.extend_from_slice(&res_id.to_be_bytes());
        Self {
            buf,
            start,
            nests: Vec::new(),
        }
    }

    fn attr(&mut self, kind: u16, value: &[u8]) {
        let len = u16::try_from(4 + value.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.pad();
    }

    fn attr_str(&mut self, kind: u16, value: &str) {
        let mut v = Vec::with_capacity(value.len() + 1);
        v.extend_from_slice(value.as_bytes());
        v.push(0);
        self.attr(kind, &v);
    }

    fn nest(&mut self, kind: u16) {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    }

    fn end_nest(&mut self) {
        if let Some(at) = self.nests.pop() {
            let len = u16::try_from(self.buf.len() - at).unwrap_or(u16::MAX);
            self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        }
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn end(mut self) -> Vec<u8> {
        let len = (self.buf.len() - self.start) as u32;
        self.buf[self.start..self.start + 4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

/// nft's user data for an element comment: type, length, the string and
/// its NUL. Longer comments are cut at [`COMMENT_MAX`] bytes.
pub fn comment_udata(comment: &str) -> Vec<u8> {
    let mut end = comment.len().min(COMMENT_MAX);
    while !comment.is_char_boundary(end) {
        end -= 1;
    }
    let text = &comment.as_bytes()[..end];
    let mut v = Vec::with_capacity(text.len() + 3);
    v.push(NFTNL_UDATA_SET_ELEM_COMMENT);
    v.push((text.len() + 1) as u8);
    v.extend_from_slice(text);
    v.push(0);
    v
}

/// The batch that adds (`comment` is Some) or deletes one element keyed
/// `key`; returns the bytes and the sequence number of the element message.
pub fn element_batch(
    seq: u32,
    set: SetRef<'_>,
    key: &[u8],
    comment: Option<&str>,
) -> (Vec<u8>, u32) {
    let res = NFNL_SUBSYS_NFTABLES;
    let begin = Msg::begin(
        Vec::with_capacity(256),
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        0,
        res,
    );
    let buf = begin.end();
    let (kind, flags) = match comment {
        Some(_) => (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK),
        None => (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK),
    };
    let elem_seq = seq.wrapping_add(1);
    let mut m = Msg::begin(buf, nft_type(kind), flags, elem_seq, set.family as u8, 0);
    m.attr_str(NFTA_SET_ELEM_LIST_TABLE, set.table);
    m.attr_str(NFTA_SET_ELEM_LIST_SET, set.set);
    m.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
    m.nest(NFTA_LIST_ELEM);
    m.nest(NFTA_SET_ELEM_KEY);
    m.attr(NFTA_DATA_VALUE, key);
    m.end_nest();
    if let Some(c) = comment {
        m.attr(NFTA_SET_ELEM_USERDATA, &comment_udata(c));
    }
    m.end_nest();
    m.end_nest();
    let buf = m.end();
    let end = Msg::begin(
        buf,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        seq.wrapping_add(2),
        0,
        res,
    );
    (end.end(), elem_seq)
}

/// The dump request for every element of a set.
pub fn dump_request(seq: u32, set: SetRef<'_>) -> Vec<u8> {
    let flags = NLM_F_REQUEST | NLM_F_DUMP;
    let kind = nft_type(NFT_MSG_GETSETELEM);
    let mut m = Msg::begin(
        Vec::with_capacity(64),
        kind,
        flags,
        seq,
        set.family as u8,
        0,
    );
    m.attr_str(NFTA_SET_ELEM_LIST_TABLE, set.table);
    m.attr_str(NFTA_SET_ELEM_LIST_SET, set.set);
    m.end()
}

/// The attributes in `buf`: (type without flags, payload).
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            return None;
        }
        let value = &buf[4..len];
        buf = &buf[((len + 3) & !3).min(buf.len())..];
        Some((kind, value))
    })
}

/// The keys of the elements in one NEWSETELEM message's attributes.
pub fn element_keys(payload: &[u8]) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    for (kind, elems) in attrs(payload) {
        if kind != NFTA_SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for (kind, elem) in attrs(elems) {
            if kind != NFTA_LIST_ELEM {
                continue;
            }
            let key = attrs(elem)
                .filter(|(k, _)| *k == NFTA_SET_ELEM_KEY)
                .flat_map(|(_, key)| attrs(key))
                .find(|(k, _)| *k == NFTA_DATA_VALUE);
            if let Some((_, value)) = key {
                keys.push(value.to_vec());
            }
        }
    }
    keys
}

/// One reply: its type, sequence number and payload after the header.
struct Reply<'a> {
    kind: u16,
    seq: u32,
    payload: &'a [u8],
}

fn replies(mut buf: &[u8]) -> impl Iterator<Item = Reply<'_>> {
    std::iter::from_fn(move || {
        if buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        let r = Reply {
            kind: u16::from_ne_bytes([buf[4], buf[5]]),
            seq: u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]),
            payload: &buf[NLMSG_HDRLEN..len],
        };
        buf = &buf[((len + 3) & !3).min(buf.len())..];
        Some(r)
    })
}

/// The errno of an NLMSG_ERROR payload (0 for an acknowledgement).
fn error_code(payload: &[u8]) -> i32 {
    match payload.get(..4) {
        Some(b) => -i32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        None => libc::EBADMSG,
    }
}

/// Room for one datagram of replies.
const RX_BUFFER: usize = 64 * 1024;

/// A blocking NETLINK_NETFILTER socket.
pub struct Nfnl {
    socket: Socket,
    seq: u32,
    rx: Vec<u8>,
}

impl Nfnl {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self {
            socket,
            seq: 0,
            rx: Vec::with_capacity(RX_BUFFER),
        })
    }

    fn next_seq(&mut self, n: u32) -> u32 {
        let seq = self.seq.wrapping_add(1);
        self.seq = seq.wrapping_add(n);
        seq
    }

    /// Adds (with its comment) or, when `comment` is None, deletes the
    /// element `key` of `set`, as one transaction. The error carries the
    /// kernel's errno (ENOENT: no such table, set or element).
    pub fn change_element(
        &mut self,
        set: SetRef<'_>,
        key: &[u8],
        comment: Option<&str>,
    ) -> io::Result<()> {
        let seq = self.next_seq(3);
        let (batch, elem_seq) = element_batch(seq, set, key, comment);
        self.socket.send(&batch, 0)?;
        // The element message is acknowledged; an error on the batch
        // messages themselves (e.g. no nf_tables) arrives with their seq.
        loop {
            self.rx.clear();
            self.socket.recv(&mut self.rx, 0)?;
            for r in replies(&self.rx) {
                if r.kind != NLMSG_ERROR || !(seq..=seq.wrapping_add(2)).contains(&r.seq) {
                    continue;
                }
                match error_code(r.payload) {
                    0 if r.seq == elem_seq => return Ok(()),
                    0 => {}
                    errno => return Err(io::Error::from_raw_os_error(errno)),
                }
            }
        }
    }

    /// The keys of every element of `set` (ENOENT when it does not exist).
    pub fn element_keys(&mut self, set: SetRef<'_>) -> io::Result<Vec<Vec<u8>>> {
        let seq = self.next_seq(1);
        self.socket.send(&dump_request(seq, set), 0)?;
        let mut keys = Vec::new();
        loop {
            self.rx.clear();
            self.socket.recv(&mut self.rx, 0)?;
            for r in replies(&self.rx) {
                if r.seq != seq {
                    continue;
                }
                match r.kind {
                    NLMSG_DONE => return Ok(keys),
                    NLMSG_ERROR => match error_code(r.payload) {
                        0 => return Ok(keys),
                        errno => return Err(io::Error::from_raw_os_error(errno)),
                    },
                    _ => keys.extend(element_keys(r.payload.get(NFGENMSG_LEN..).unwrap_or(&[]))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SET: SetRef<'static> = SetRef {
        family: Family::Ipv4,
        table: "flannel-cni",
        set: "pods-cbr0",
    };

    #[test]
    fn comment_is_one_nul_terminated_tlv() {
        assert_eq!(comment_udata("ab c"), b"\x00\x05ab c\x00");
        let long = comment_udata(&"x".repeat(300));
        assert_eq!(long.len(), 2 + COMMENT_MAX + 1);
        assert_eq!(long[1] as usize, COMMENT_MAX + 1);
    }

    #[test]
    fn add_batch_is_begin_element_end_and_the_key_reads_back() {
        let (buf, elem_seq) = element_batch(7, SET, &[10, 244, 1, 5], Some("abc eth0"));
        assert_eq!(elem_seq, 8);
        let msgs: Vec<_> = replies(&buf).collect();
        let kinds: Vec<_> = msgs.iter().map(|m| (m.kind, m.seq)).collect();
        assert_eq!(
            kinds,
            [
                (NFNL_MSG_BATCH_BEGIN, 7),
                (0x0a0c, 8),
                (NFNL_MSG_BATCH_END, 9)
            ]
        );
        // The batch messages name the nf_tables subsystem (big-endian res_id).
        assert_eq!(msgs[0].payload, [0, 0, 0, 10]);
        let elem = msgs[1].payload;
        assert_eq!(elem[..2], [Family::Ipv4 as u8, 0]);
        let attrs_: Vec<_> = attrs(&elem[NFGENMSG_LEN..]).collect();
        assert_eq!(attrs_[0], (NFTA_SET_ELEM_LIST_TABLE, &b"flannel-cni\0"[..]));
        assert_eq!(attrs_[1], (NFTA_SET_ELEM_LIST_SET, &b"pods-cbr0\0"[..]));
        assert_eq!(
            element_keys(&elem[NFGENMSG_LEN..]),
            vec![vec![10, 244, 1, 5]]
        );
        let udata = attrs(attrs_[2].1)
            .flat_map(|(_, e)| attrs(e))
            .find(|(k, _)| *k == NFTA_SET_ELEM_USERDATA)
            .map(|(_, v)| v.to_vec());
        assert_eq!(udata, Some(comment_udata("abc eth0")));
    }

    #[test]
    fn delete_batch_carries_no_comment_and_no_create_flag() {
        let (buf, _) = element_batch(1, SET, &[10, 244, 1, 5], None);
        let elem = replies(&buf).nth(1).expect("element message");
        assert_eq!(elem.kind, 0x0a0e);
        let flags = u16::from_ne_bytes([buf[20 + 6], buf[20 + 7]]);
        assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK);
        let all: Vec<u8> = elem.payload.to_vec();
        assert!(!all.windows(3).any(|w| w == b"abc"));
    }
}
