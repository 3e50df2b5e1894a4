//! Writing many kernel entries at the kernel's pace: each write is one
//! netlink message ([`Write`]), and a list of them is sent many messages to
//! a datagram on a socket of its own ([`Writer`]). The kernel handles the
//! messages of a datagram one after the other, in order, and acks each, so
//! a list keeps its order (a route is written after its neighbour) while
//! costing one system call per [`PER_DATAGRAM`] entries instead of one
//! round trip each.
//!
//! Owns that socket and the messages' layout; what to write is the
//! caller's (`reconcile.rs`, `peer.rs`).

use std::net::IpAddr;

use futures::StreamExt;
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{RouteProtocol, RouteScope};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::proto::ConnectionHandle;
use rtnetlink::sys::SocketAddr;
use rtnetlink::RouteMessageBuilder;

use super::error::VxlanError;
use super::peer::{describe_fdb, describe_neigh};
use super::route::{RouteEntry, RouteSpec};
use super::{Device, Vxlan, VxlanFamily};

/// Messages per datagram, and so acks queued on our socket at most: an ack
/// is a small buffer (an error's carries the request, < 200 bytes), and
/// this many fit the receive buffer many times over. A lost ack would stall
/// the list, so there is a bound on waiting too ([`ACK_TIMEOUT`]).
pub(crate) const PER_DATAGRAM: usize = 128;

/// How long the acks of one datagram may take before its writes are
/// reported as failed (the next resync retries them).
const ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The receive buffer asked for the writer's socket.
const RCVBUF: libc::c_int = 1 << 20;

/// One kernel write on `dev`.
#[derive(Debug, Clone)]
pub(crate) enum Write<F: VxlanFamily> {
    /// `ip neigh replace IP lladdr MAC dev DEV nud permanent`.
    Neigh { ip: F::Addr, mac: [u8; 6] },
    /// `ip neigh del IP dev DEV`; one already gone is fine.
    DelNeigh { ip: F::Addr, mac: Option<Vec<u8>> },
    /// `bridge fdb replace MAC dev DEV dst DST self permanent`.
    Fdb { mac: [u8; 6], dst: F::Addr },
    /// `bridge fdb del MAC dev DEV dst DST self`; one already gone is fine.
    DelFdb { mac: Vec<u8>, dst: Option<F::Addr> },
    /// `ip route replace DST via GW dev OIF [onlink]`, proto boot.
    Route(RouteSpec<F>),
    /// `ip route del DST via GW dev OIF`; one already gone is fine.
    DelRoute(RouteSpec<F>),
    /// A route exactly as dumped (`dev`: its device's name, for messages).
    DelRouteEntry { entry: RouteEntry<F>, dev: String },
}

impl<F: VxlanFamily> Write<F> {
    /// Whether "already gone" counts as done.
    fn is_delete(&self) -> bool {
        !matches!(
            self,
            Write::Neigh { .. } | Write::Fdb { .. } | Write::Route(_)
        )
    }

    /// The write as a log line names it ("fdb 0e:.. dst 192.168.64.3 on
    /// flannel.1", "route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink").
    pub fn describe(&self, dev: &Device) -> String {
        match self {
            Write::Neigh { ip, mac } => describe_neigh(ip, Some(&mac[..]), &dev.name),
            Write::DelNeigh { ip, mac } => describe_neigh(ip, mac.as_deref(), &dev.name),
            Write::Fdb { mac, dst } => describe_fdb(mac, Some(*dst), &dev.name),
            Write::DelFdb { mac, dst } => describe_fdb(mac, *dst, &dev.name),
            Write::Route(spec) | Write::DelRoute(spec) => spec.to_string(),
            Write::DelRouteEntry { entry, dev } => entry.describe(dev),
        }
    }

    /// The operation, for errors ("replace neighbour 10.244.2.0 lladdr
    /// 0e:00:00:00:00:02 on flannel.1").
    fn op(&self, dev: &Device) -> String {
        let mac = common::mac::format;
        match self {
            Write::Neigh { ip, mac: m } => {
                format!("replace neighbour {ip} lladdr {} on {}", mac(m), dev.name)
            }
            Write::DelNeigh { ip, .. } => format!("delete neighbour {ip} on {}", dev.name),
            Write::Fdb { mac: m, dst } => {
                format!("replace fdb entry {} dst {dst} on {}", mac(m), dev.name)
            }
            Write::DelFdb { mac: m, dst } => match dst {
                Some(dst) => format!("delete fdb entry {} dst {dst} on {}", mac(m), dev.name),
                None => format!("delete fdb entry {} on {}", mac(m), dev.name),
            },
            Write::Route(spec) => format!("replace {spec}"),
            Write::DelRoute(spec) => format!("delete {spec}"),
            Write::DelRouteEntry { entry, dev } => format!("delete {}", entry.describe(dev)),
        }
    }

    /// The netlink request, flags included.
    fn message(&self, dev: &Device) -> Result<NetlinkMessage<RouteNetlinkMessage>, VxlanError> {
        const ADD: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        const DEL: u16 = NLM_F_REQUEST | NLM_F_ACK;
        let (payload, flags) = match self {
            Write::Neigh { ip, mac } => {
                let mut m = neigh_header(F::AF, dev.index);
                m.header.state = NeighbourState::Permanent;
                m.attributes
                    .push(NeighbourAttribute::Destination(F::neigh_address(*ip)));
                m.attributes
                    .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
                (RouteNetlinkMessage::NewNeighbour(m), ADD)
            }
            Write::DelNeigh { ip, .. } => {
                let mut m = neigh_header(F::AF, dev.index);
                m.attributes
                    .push(NeighbourAttribute::Destination(F::neigh_address(*ip)));
                (RouteNetlinkMessage::DelNeighbour(m), DEL)
            }
            Write::Fdb { mac, dst } => {
                let mut m = fdb_header(dev.index);
                m.attributes
                    .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
                m.attributes
                    .push(NeighbourAttribute::Destination(F::neigh_address(*dst)));
                (RouteNetlinkMessage::NewNeighbour(m), ADD)
            }
            Write::DelFdb { mac, dst } => {
                let mut m = fdb_header(dev.index);
                m.attributes
                    .push(NeighbourAttribute::LinkLayerAddress(mac.clone()));
                if let Some(dst) = dst {
                    m.attributes
                        .push(NeighbourAttribute::Destination(F::neigh_address(*dst)));
                }
                (RouteNetlinkMessage::DelNeighbour(m), DEL)
            }
            Write::Route(spec) => {
                let mut b = route_message(spec)?
                    .protocol(RouteProtocol::Boot)
                    .priority(F::ROUTE_METRIC);
                if spec.onlink {
                    b = b.onlink();
                }
                (RouteNetlinkMessage::NewRoute(b.build()), ADD)
            }
            Write::DelRoute(spec) => {
                // Protocol unspecified and scope "nowhere" as iproute2 sends
                // them: the kernel only matches the fields that are set.
                let msg = route_message(spec)?
                    .protocol(RouteProtocol::Unspec)
                    .scope(RouteScope::NoWhere)
                    .build();
                (RouteNetlinkMessage::DelRoute(msg), DEL)
            }
            Write::DelRouteEntry { entry, .. } => {
                (RouteNetlinkMessage::DelRoute(entry.msg.clone()), DEL)
            }
        };
        let mut req = NetlinkMessage::from(payload);
        req.header.flags = flags;
        Ok(req)
    }
}

fn neigh_header(family: AddressFamily, index: u32) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family;
    m.header.ifindex = index;
    m
}

/// An FDB entry of the VXLAN device itself (`self permanent`).
fn fdb_header(index: u32) -> NeighbourMessage {
    let mut m = neigh_header(AddressFamily::Bridge, index);
    m.header.flags = NeighbourFlags::Own;
    m.header.state = NeighbourState::Permanent;
    m
}

/// The message for `DST via GW dev OIF`; the rest is the caller's.
fn route_message<F: VxlanFamily>(
    spec: &RouteSpec<F>,
) -> Result<RouteMessageBuilder<IpAddr>, VxlanError> {
    let bad = |reason: String| VxlanError::Unexpected {
        op: format!("build route {} via {}", spec.dst, spec.gw),
        reason,
    };
    Ok(RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(F::to_ip(spec.dst.base()), spec.dst.prefix())
        .map_err(|e| bad(e.to_string()))?
        .gateway(F::to_ip(spec.gw))
        .map_err(|e| bad(e.to_string()))?
        .output_interface(spec.oif))
}

/// A netlink socket of its own for lists of writes, every ack forwarded
/// (so the i-th answer is the i-th write's). Opened in the network
/// namespace of the calling thread: the one of the handle it goes with.
#[derive(Clone, Debug)]
pub(crate) struct Writer {
    conn: ConnectionHandle<RouteNetlinkMessage>,
}

impl Writer {
    /// Opens the socket and runs its connection on the current runtime.
    pub fn open() -> std::io::Result<Writer> {
        let (mut conn, handle, _) = rtnetlink::proto::new_connection::<RouteNetlinkMessage>(
            rtnetlink::sys::protocols::NETLINK_ROUTE,
        )?;
        conn.set_forward_ack(true);
        {
            use rtnetlink::sys::AsyncSocket;
            // Best effort: the default buffer holds a datagram's acks too.
            let _ = conn.socket_mut().socket_mut().set_rx_buf_sz(RCVBUF);
        }
        tokio::spawn(conn);
        Ok(Writer { conn: handle })
    }

    /// Sends one datagram of `msgs`; each one's outcome, in order.
    async fn datagram(
        &self,
        msgs: Vec<NetlinkMessage<RouteNetlinkMessage>>,
    ) -> Result<Vec<Result<(), rtnetlink::Error>>, String> {
        let n = msgs.len();
        let mut answers = self
            .conn
            .request_batch(msgs, SocketAddr::new(0, 0))
            .map_err(|e| format!("send: {e}"))?;
        let mut got: Vec<(u32, Result<(), rtnetlink::Error>)> = Vec::with_capacity(n);
        let collect = async {
            while let Some(msg) = answers.next().await {
                let seq = msg.header.sequence_number;
                match msg.payload {
                    NetlinkPayload::Error(e) if e.code.is_some() => {
                        got.push((seq, Err(rtnetlink::Error::NetlinkError(e))))
                    }
                    NetlinkPayload::Error(_) => got.push((seq, Ok(()))),
                    _ => {}
                }
            }
        };
        if tokio::time::timeout(ACK_TIMEOUT, collect).await.is_err() {
            return Err(format!("no answer to {n} requests in {ACK_TIMEOUT:?}"));
        }
        if got.len() != n {
            return Err(format!("{} answers to {n} requests", got.len()));
        }
        // Sequence numbers are consecutive within one datagram.
        got.sort_by_key(|(seq, _)| *seq);
        Ok(got.into_iter().map(|(_, r)| r).collect())
    }
}

impl<F: VxlanFamily> Vxlan<F> {
    /// Makes `writes` on `dev`, in order; each one's outcome. With the
    /// writer socket, [`PER_DATAGRAM`] to a datagram; without (it could not
    /// be opened), one request at a time on the handle.
    pub(crate) async fn write_all(
        &self,
        dev: &Device,
        writes: &[Write<F>],
    ) -> Vec<Result<(), VxlanError>> {
        let mut out = Vec::with_capacity(writes.len());
        for chunk in writes.chunks(PER_DATAGRAM) {
            let mut msgs = Vec::with_capacity(chunk.len());
            let mut built = Vec::with_capacity(chunk.len());
            for w in chunk {
                match w.message(dev) {
                    Ok(m) => {
                        msgs.push(m);
                        built.push(None);
                    }
                    Err(e) => built.push(Some(e)),
                }
            }
            let n = msgs.len();
            let answers: Vec<Result<Result<(), rtnetlink::Error>, String>> =
                match self.writer.as_ref() {
                    Some(writer) => match writer.datagram(msgs).await {
                        Ok(a) => a.into_iter().map(Ok).collect(),
                        Err(reason) => (0..n).map(|_| Err(reason.clone())).collect(),
                    },
                    None => {
                        let mut a = Vec::with_capacity(msgs.len());
                        for m in msgs {
                            a.push(Ok(self.request(m).await));
                        }
                        a
                    }
                };
            let mut answers = answers.into_iter();
            for (w, b) in chunk.iter().zip(built) {
                if let Some(e) = b {
                    out.push(Err(e));
                    continue;
                }
                let r = match answers.next() {
                    Some(Ok(Ok(()))) => Ok(()),
                    Some(Ok(Err(e))) => Err(VxlanError::netlink(w.op(dev), e)),
                    Some(Err(reason)) => Err(VxlanError::Unexpected {
                        op: w.op(dev),
                        reason,
                    }),
                    None => Err(VxlanError::Unexpected {
                        op: w.op(dev),
                        reason: "no answer".to_string(),
                    }),
                };
                out.push(if w.is_delete() {
                    super::error::ok_if_missing(r)
                } else {
                    r
                });
            }
        }
        out
    }

    /// One request on the rtnetlink handle, its ack awaited.
    async fn request(
        &self,
        msg: NetlinkMessage<RouteNetlinkMessage>,
    ) -> Result<(), rtnetlink::Error> {
        let mut handle = self.handle.clone();
        let mut answers = handle.request(msg)?;
        while let Some(m) = answers.next().await {
            if let NetlinkPayload::Error(e) = m.payload {
                if e.code.is_some() {
                    return Err(rtnetlink::Error::NetlinkError(e));
                }
            }
        }
        Ok(())
    }
}
