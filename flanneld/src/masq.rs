//! `--ip-masq` and the forward rules, with nftables.
//!
//! flannel's iptables rules, as one nftables table per family, `ip
//! flannel-rs` and (dual-stack) `ip6 flannel-rs`, both replaced in a single
//! transaction: there is never a moment without rules (flannel flushes its
//! chains first, #2237). Every `--iptables-resync` seconds the tables are
//! compared with what they should be and rewritten if someone changed or
//! deleted them. The IPv6 table is the same text as the IPv4 one, with
//! `ip6` addresses and ff00::/8 for multicast (flannel's ip6tables rules).
//!
//! ```text
//! chain postrtg (nat postrouting, srcnat):
//!   meta mark & 0x4000 == 0x4000 return            (kube-proxy masquerades these)
//!   ip saddr P ip daddr N return                   (pod → cluster: keep the pod IP)
//!   ip saddr N ip daddr P return
//!   ip saddr != N ip daddr P return
//!   ip saddr N ip daddr != 224.0.0.0/4 masquerade fully-random   (pod → world)
//!   ip saddr != N ip daddr N masquerade fully-random             (host → pods)
//! chain forward (filter forward):
//!   ip saddr N accept
//!   ip daddr N accept
//! ```
//! P is this node's subnet, N the cluster network.
//!
//! Owns the `flannel-rs` tables and nothing else in nftables: never the CNI
//! plugin's `flannel-cni` tables, nor kube-proxy's or anyone's. Every run of
//! `nft` is awaited on tokio with a timeout, so it never blocks the
//! daemon's loop; when to check is the loop's (`MasqKeeper::check`).

use std::fmt::Display;
use std::time::Duration;

use common::nft::NftError;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use ipnetwork::{Ipv4Network, Ipv6Network};

pub const TABLE: &str = "flannel-rs";

/// Running `nft` for the tables failed.
#[derive(Debug, thiserror::Error)]
pub enum MasqError {
    /// nft could not be started, or said no.
    #[error(transparent)]
    Nft(#[from] NftError),
    /// Waiting for nft (`what` is its command line) failed.
    #[error("{what}: wait")]
    Wait {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: no answer within {timeout:?}")]
    Timeout { what: String, timeout: Duration },
}

impl MasqError {
    /// nft said the table does not exist.
    fn is_no_such_table(&self) -> bool {
        matches!(self, Self::Nft(NftError::Failed { message, .. })
            if message.contains("No such file or directory"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasqRules {
    /// The IPv4 network and this node's IPv4 subnet (none when IPv6-only).
    pub ipv4: Option<(Ipv4Network, Ipv4Network)>,
    /// Dual-stack: the IPv6 network and this node's IPv6 subnet.
    pub ipv6: Option<(Ipv6Network, Ipv6Network)>,
    pub masquerade: bool,
    pub forward: bool,
    pub fully_random: bool,
}

/// The nftables family keyword of each table (`ip`, `ip6`).
const FAMILIES: [&str; 2] = ["ip", "ip6"];

impl MasqRules {
    /// Whether any rule is wanted at all.
    pub fn wanted(&self) -> bool {
        self.masquerade || self.forward
    }

    /// The IPv4 table's body, one rule a line, unless IPv6-only.
    fn body(&self) -> Option<String> {
        let (n, p) = self.ipv4?;
        Some(self.family_body("ip", n, p, "224.0.0.0/4"))
    }

    /// The IPv6 table's body, when dual-stack.
    fn body6(&self) -> Option<String> {
        let (n, p) = self.ipv6?;
        Some(self.family_body("ip6", n, p, "ff00::/8"))
    }

    /// One family's table body: `ip` is the nftables address keyword
    /// (`ip`, `ip6`), `n` the network, `p` our subnet, `mcast` the
    /// family's multicast range (never masqueraded).
    fn family_body(&self, ip: &str, n: impl Display, p: impl Display, mcast: &str) -> String {
        let random = if self.fully_random {
            " fully-random"
        } else {
            ""
        };
        let mut out = String::new();
        if self.masquerade {
            out.push_str(&format!(
                "  chain postrtg {{\n    type nat hook postrouting priority srcnat; policy accept;\n\
                 \x20   meta mark & 0x00004000 == 0x00004000 return comment \"flanneld masq\"\n\
                 \x20   {ip} saddr {p} {ip} daddr {n} return comment \"flanneld masq\"\n\
                 \x20   {ip} saddr {n} {ip} daddr {p} return comment \"flanneld masq\"\n\
                 \x20   {ip} saddr != {n} {ip} daddr {p} return comment \"flanneld masq\"\n\
                 \x20   {ip} saddr {n} {ip} daddr != {mcast} masquerade{random} comment \"flanneld masq\"\n\
                 \x20   {ip} saddr != {n} {ip} daddr {n} masquerade{random} comment \"flanneld masq\"\n  }}\n"
            ));
        }
        if self.forward {
            out.push_str(&format!(
                "  chain forward {{\n    type filter hook forward priority filter; policy accept;\n\
                 \x20   {ip} saddr {n} accept comment \"flanneld forward\"\n\
                 \x20   {ip} daddr {n} accept comment \"flanneld forward\"\n  }}\n"
            ));
        }
        out
    }

    /// The script that replaces both tables in one transaction (creating
    /// them if needed; an IPv6 table left from a dual-stack run goes when
    /// IPv6 is off).
    fn script(&self) -> String {
        let mut script = remove_script();
        if let Some(body) = self.body() {
            script.push_str(&format!("table ip {TABLE} {{\n{body}}}\n"));
        }
        if let Some(body6) = self.body6() {
            script.push_str(&format!("table ip6 {TABLE} {{\n{body6}}}\n"));
        }
        script
    }

    /// Replaces the tables in one transaction.
    pub async fn apply(&self) -> Result<(), MasqError> {
        nft(&["-f", "-"], Some(&self.script())).await.map(|_| ())
    }

    /// Removes the tables (rules switched off).
    pub async fn remove() -> Result<(), MasqError> {
        nft(&["-f", "-"], Some(&remove_script())).await.map(|_| ())
    }

    /// The rules as the kernel has them, normalised, to compare runs: the
    /// tables that exist, in family order.
    pub async fn current() -> Result<Option<String>, MasqError> {
        let mut found = Vec::new();
        for family in FAMILIES {
            match nft(&["list", "table", family, TABLE], None).await {
                Ok(text) => found.push(normalise(&text)),
                Err(e) if e.is_no_such_table() => {}
                Err(e) => return Err(e),
            }
        }
        Ok((!found.is_empty()).then(|| found.join("\n")))
    }
}

/// Keeps the rules in place: call `check` periodically.
pub struct MasqKeeper {
    rules: MasqRules,
    /// The kernel's rendering right after our last apply.
    applied: Option<String>,
}

impl MasqKeeper {
    /// The tables kept, for messages: "ip flannel-rs" (and "ip6 flannel-rs").
    pub fn tables(&self) -> String {
        match (self.rules.ipv4, self.rules.ipv6) {
            (Some(_), Some(_)) => format!("ip {TABLE} and ip6 {TABLE}"),
            (None, Some(_)) => format!("ip6 {TABLE}"),
            _ => format!("ip {TABLE}"),
        }
    }

    /// Writes the rules (removes the tables when none are wanted) and
    /// reads them back ([`write`](Self::write), then
    /// [`record`](Self::record)). The daemon does the two apart, with
    /// subnet.env written between them; the tests do both at once.
    #[cfg(test)]
    pub async fn start(rules: MasqRules) -> Result<Self, MasqError> {
        let mut keeper = Self::write(rules).await?;
        keeper.record().await?;
        Ok(keeper)
    }

    /// Writes the rules (removes the tables when none are wanted), without
    /// reading them back: until [`record`](Self::record) has, the first
    /// [`check`](Self::check) rewrites them. The daemon writes them before
    /// subnet.env and reads them back after (two `nft list` runs it need
    /// not wait for).
    pub async fn write(rules: MasqRules) -> Result<Self, MasqError> {
        let keeper = Self {
            rules,
            applied: None,
        };
        keeper.write_rules().await?;
        Ok(keeper)
    }

    /// Reads back what the kernel made of the rules written, for `check`
    /// to compare with.
    pub async fn record(&mut self) -> Result<(), MasqError> {
        self.applied = if self.rules.wanted() {
            MasqRules::current().await?
        } else {
            None
        };
        Ok(())
    }

    async fn write_rules(&self) -> Result<(), MasqError> {
        if self.rules.wanted() {
            self.rules.apply().await
        } else {
            MasqRules::remove().await
        }
    }

    async fn install(&mut self) -> Result<(), MasqError> {
        self.write_rules().await?;
        self.record().await
    }

    /// Rewrites the table if it differs from what we installed; returns
    /// whether it had to.
    pub async fn check(&mut self) -> Result<bool, MasqError> {
        if !self.rules.wanted() {
            return Ok(false);
        }
        if MasqRules::current().await? == self.applied && self.applied.is_some() {
            return Ok(false);
        }
        self.install().await?;
        Ok(true)
    }
}

/// Deletes both tables, whether or not they exist.
fn remove_script() -> String {
    FAMILIES
        .iter()
        .map(|f| format!("add table {f} {TABLE}\ndelete table {f} {TABLE}\n"))
        .collect()
}

fn normalise(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// How long one `nft` run may take before it is abandoned (and killed).
const NFT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `nft` without blocking the daemon's thread, always reaping it.
async fn nft(args: &[&str], stdin: Option<&str>) -> Result<String, MasqError> {
    let what = common::nft::describe(args);
    let mut child = Command::from(common::nft::command(args, stdin.is_some()))
        .kill_on_drop(true)
        .spawn()
        .map_err(common::nft::spawn_error)?;
    let run = async {
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A write error shows up as nft's own failure below.
            let _ = pipe.write_all(text.as_bytes()).await;
        }
        child.wait_with_output().await
    };
    let out = match tokio::time::timeout(NFT_TIMEOUT, run).await {
        Ok(Ok(out)) => out,
        Ok(Err(source)) => return Err(MasqError::Wait { what, source }),
        Err(_) => {
            return Err(MasqError::Timeout {
                what,
                timeout: NFT_TIMEOUT,
            })
        }
    };
    Ok(common::nft::outcome(&what, out)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dual-stack rules on 10.244.0.0/16 and fd00:10:244::/56, this node
    /// holding their subnet 3; masquerade and forward on, fully random.
    fn dual() -> MasqRules {
        MasqRules {
            ipv4: Some((
                "10.244.0.0/16".parse().expect("cidr"),
                "10.244.3.0/24".parse().expect("cidr"),
            )),
            ipv6: Some((
                "fd00:10:244::/56".parse().expect("cidr"),
                "fd00:10:244:3::/64".parse().expect("cidr"),
            )),
            masquerade: true,
            forward: true,
            fully_random: true,
        }
    }

    #[test]
    fn rules_follow_flannel() {
        let r = MasqRules {
            ipv6: None,
            ..dual()
        };
        let body = r.body().expect("IPv4 body");
        assert!(body.contains("ip saddr 10.244.3.0/24 ip daddr 10.244.0.0/16 return"));
        assert!(
            body.contains("ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random")
        );
        assert!(body
            .contains("ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random"));
        assert!(body.contains("ip daddr 10.244.0.0/16 accept"));
        let plain = MasqRules {
            fully_random: false,
            forward: false,
            ..r
        };
        assert!(!plain.body().expect("IPv4 body").contains("fully-random"));
        assert!(!plain.body().expect("IPv4 body").contains("chain forward"));
        assert!(plain.body6().is_none());
        assert!(!plain.script().contains("table ip6 flannel-rs {"));
    }

    #[test]
    fn ipv6_only_has_only_the_ip6_table() {
        let r = MasqRules {
            ipv4: None,
            fully_random: false,
            ..dual()
        };
        assert!(r.body().is_none());
        let script = r.script();
        assert!(!script.contains("table ip flannel-rs {"), "{script}");
        assert!(script.contains("table ip6 flannel-rs {"), "{script}");
        assert!(
            script.contains("ip6 saddr fd00:10:244:3::/64 ip6 daddr fd00:10:244::/56 return"),
            "{script}"
        );
        let keeper = MasqKeeper {
            rules: r,
            applied: None,
        };
        assert_eq!(keeper.tables(), "ip6 flannel-rs");
    }

    /// Dual-stack rules applied in a namespace and read back from the
    /// kernel; a deleted IPv6 table is noticed and both rewritten; IPv6
    /// switched off removes the ip6 table.
    #[test]
    fn dual_stack_tables_are_applied_checked_and_removed() {
        let ns = crate::vxlan::tests::TestNs::new();
        let dual = dual();
        let v4_only = MasqRules {
            ipv6: None,
            ..dual.clone()
        };
        let list = |family: &str| ns.nft_table(family, TABLE);
        let mut keeper = ns
            .within(|_| MasqKeeper::start(dual.clone()))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(keeper.tables(), "ip flannel-rs and ip6 flannel-rs");
        let v6 = list("ip6").expect("table ip6 flannel-rs");
        for rule in [
            "ip6 saddr fd00:10:244:3::/64 ip6 daddr fd00:10:244::/56 return",
            "ip6 saddr fd00:10:244::/56 ip6 daddr != ff00::/8 masquerade fully-random",
            "ip6 saddr != fd00:10:244::/56 ip6 daddr fd00:10:244::/56 masquerade fully-random",
            "ip6 daddr fd00:10:244::/56 accept",
        ] {
            assert!(v6.contains(rule), "{rule} in {v6}");
        }
        let v4 = list("ip").expect("table ip flannel-rs");
        assert!(v4.contains("ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade"));

        // Untouched: nothing rewritten. IPv6 table deleted: rewritten.
        let (k, unchanged) = ns.within(|_| async move {
            let r = keeper.check().await.map_err(|e| crate::error::chain(&e));
            (keeper, r)
        });
        keeper = k;
        assert_eq!(unchanged, Ok(false));
        ns.nft(&["delete", "table", "ip6", TABLE]);
        let (_, rewritten) = ns.within(|_| async move {
            let r = keeper.check().await.map_err(|e| crate::error::chain(&e));
            (keeper, r)
        });
        assert_eq!(rewritten, Ok(true));
        assert_eq!(list("ip6").as_deref(), Some(v6.as_str()));

        // Restarted without IPv6: the ip6 table goes, the ip table stays.
        let keeper = ns
            .within(|_| MasqKeeper::start(v4_only))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(keeper.tables(), "ip flannel-rs");
        assert_eq!(list("ip6"), None);
        assert_eq!(list("ip").as_deref(), Some(v4.as_str()));
    }

    /// `write` puts the rules in the kernel without reading them back;
    /// `record` reads them, after which an untouched table is left alone.
    #[test]
    fn rules_written_first_are_recorded_later() {
        let ns = crate::vxlan::tests::TestNs::new();
        let rules = MasqRules {
            ipv6: None,
            ..dual()
        };
        let keeper = ns
            .within(|_| MasqKeeper::write(rules))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(keeper.applied, None, "not read back yet");
        let table = ns
            .nft_table("ip", TABLE)
            .expect("written before any read-back");
        let (keeper, recorded) = ns.within(|_| async move {
            let mut keeper = keeper;
            let r = keeper.record().await.map_err(|e| crate::error::chain(&e));
            (keeper, r)
        });
        assert_eq!(recorded, Ok(()));
        let applied = keeper.applied.clone().expect("recorded");
        assert_eq!(applied, normalise(&table));
        let (_, unchanged) = ns.within(|_| async move {
            let mut keeper = keeper;
            let r = keeper.check().await.map_err(|e| crate::error::chain(&e));
            (keeper, r)
        });
        assert_eq!(unchanged, Ok(false), "recorded: nothing to rewrite");
    }

    #[test]
    fn ipv6_rules_are_the_same_in_ip6() {
        let r = dual();
        let body = r.body6().expect("dual-stack");
        let (n, p) = ("fd00:10:244::/56", "fd00:10:244:3::/64");
        for rule in [
            format!("ip6 saddr {p} ip6 daddr {n} return"),
            format!("ip6 saddr {n} ip6 daddr {p} return"),
            format!("ip6 saddr != {n} ip6 daddr {p} return"),
            format!("ip6 saddr {n} ip6 daddr != ff00::/8 masquerade fully-random"),
            format!("ip6 saddr != {n} ip6 daddr {n} masquerade fully-random"),
            format!("ip6 saddr {n} accept"),
            format!("ip6 daddr {n} accept"),
        ] {
            assert!(body.contains(&rule), "{rule} in {body}");
        }
        assert!(!body.contains("ip saddr") && !body.contains("224.0.0.0/4"));
        // Same chains, in the same order, as IPv4's.
        let shape = |b: &str| b.replace("ip6 ", "ip ").replace(n, "N").replace(p, "P");
        let v4 = r
            .body()
            .expect("IPv4 body")
            .replace("10.244.0.0/16", "N")
            .replace("10.244.3.0/24", "P");
        assert_eq!(
            shape(&body).replace("ff00::/8", "M"),
            v4.replace("224.0.0.0/4", "M")
        );
        let script = r.script();
        assert!(
            script.contains("table ip flannel-rs {") && script.contains("table ip6 flannel-rs {")
        );
    }
}
