//! A watch's first listing, delivered in parts: the stores that read it
//! whole (file, etcd) send it as one page, the kube store a page of Node
//! objects at a time as the API server answers, so the daemon programs the
//! kernel while the next page is on its way.
//!
//! Owns the parts' protocol and the collecting of them (for tests and for
//! consumers that need the whole set at once); it reads no store.

use tokio::sync::mpsc;

use super::{Lease, LeaseError};

/// One part of a first listing, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListingPart {
    /// More of the current leases (none of them in an earlier page).
    Page(Vec<Lease>),
    /// The listing broke off and is read again from the start: forget the
    /// pages before this one.
    Restart,
    /// Every current lease has been sent; the watch's events follow.
    Complete,
}

/// The receiving end of a first listing.
pub type ListingRx = mpsc::Receiver<ListingPart>;

/// A first listing read whole: one page, then complete.
pub fn whole(leases: Vec<Lease>) -> ListingRx {
    let (tx, rx) = mpsc::channel(2);
    // Room for both: the sends cannot fail while `rx` is alive.
    let _ = tx.try_send(ListingPart::Page(leases));
    let _ = tx.try_send(ListingPart::Complete);
    rx
}

/// Every lease of the listing, its pages collected (restarts honoured).
/// `ListingCut` when the watch ended before the listing was complete.
pub async fn collect(rx: &mut ListingRx) -> Result<Vec<Lease>, LeaseError> {
    let mut all = Vec::new();
    loop {
        match rx.recv().await {
            Some(ListingPart::Page(page)) => all.extend(page),
            Some(ListingPart::Restart) => all.clear(),
            Some(ListingPart::Complete) => return Ok(all),
            None => return Err(LeaseError::ListingCut),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::LeaseAttrs;
    use std::time::SystemTime;

    fn lease(n: u8) -> Lease {
        Lease {
            subnet: format!("10.244.{n}.0/24").parse().expect("net"),
            ipv6_subnet: None,
            attrs: LeaseAttrs::vxlan([192, 168, 64, n].into(), 1, "0e:00:00:00:00:01"),
            expiration: SystemTime::UNIX_EPOCH,
        }
    }

    #[tokio::test]
    async fn a_whole_listing_is_one_page() {
        let mut rx = whole(vec![lease(1), lease(2)]);
        assert_eq!(
            collect(&mut rx).await.expect("complete"),
            vec![lease(1), lease(2)]
        );
    }

    #[tokio::test]
    async fn pages_add_up_and_a_restart_forgets_the_pages_before_it() {
        let (tx, mut rx) = mpsc::channel(8);
        for part in [
            ListingPart::Page(vec![lease(1)]),
            ListingPart::Restart,
            ListingPart::Page(vec![lease(2)]),
            ListingPart::Page(vec![lease(3)]),
            ListingPart::Complete,
        ] {
            tx.send(part).await.expect("send");
        }
        assert_eq!(
            collect(&mut rx).await.expect("complete"),
            vec![lease(2), lease(3)]
        );
    }

    #[tokio::test]
    async fn a_listing_that_never_completes_is_an_error() {
        let (tx, mut rx) = mpsc::channel(8);
        tx.send(ListingPart::Page(vec![lease(1)]))
            .await
            .expect("send");
        drop(tx);
        assert!(matches!(
            collect(&mut rx).await,
            Err(LeaseError::ListingCut)
        ));
    }
}
