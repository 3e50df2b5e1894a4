//! `--ip-masq` and the forward rules, with nftables.
//!
//! flannel's iptables rules, as one nftables table `ip flannel-rs` that is
//! replaced in a single transaction: there is never a moment without rules
//! (flannel flushes its chains first, #2237). Every `--iptables-resync`
//! seconds the table is compared with what it should be and rewritten if
//! someone changed or deleted it.
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

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use ipnetwork::Ipv4Network;

pub const TABLE: &str = "flannel-rs";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasqRules {
    pub network: Ipv4Network,
    pub subnet: Ipv4Network,
    pub masquerade: bool,
    pub forward: bool,
    pub fully_random: bool,
}

impl MasqRules {
    /// Whether any rule is wanted at all.
    pub fn wanted(&self) -> bool {
        self.masquerade || self.forward
    }

    /// The table's body, one rule a line.
    fn body(&self) -> String {
        let (n, p) = (self.network, self.subnet);
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
                 \x20   ip saddr {p} ip daddr {n} return comment \"flanneld masq\"\n\
                 \x20   ip saddr {n} ip daddr {p} return comment \"flanneld masq\"\n\
                 \x20   ip saddr != {n} ip daddr {p} return comment \"flanneld masq\"\n\
                 \x20   ip saddr {n} ip daddr != 224.0.0.0/4 masquerade{random} comment \"flanneld masq\"\n\
                 \x20   ip saddr != {n} ip daddr {n} masquerade{random} comment \"flanneld masq\"\n  }}\n"
            ));
        }
        if self.forward {
            out.push_str(&format!(
                "  chain forward {{\n    type filter hook forward priority filter; policy accept;\n\
                 \x20   ip saddr {n} accept comment \"flanneld forward\"\n\
                 \x20   ip daddr {n} accept comment \"flanneld forward\"\n  }}\n"
            ));
        }
        out
    }

    /// Replaces the table in one transaction (creating it if needed).
    pub async fn apply(&self) -> Result<(), String> {
        let script = format!(
            "add table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n{}}}\n",
            self.body()
        );
        nft(&["-f", "-"], Some(&script)).await.map(|_| ())
    }

    /// Removes the table (rules switched off).
    pub async fn remove() -> Result<(), String> {
        let script = format!("add table ip {TABLE}\ndelete table ip {TABLE}\n");
        nft(&["-f", "-"], Some(&script)).await.map(|_| ())
    }

    /// The rules as the kernel has them, normalised, to compare runs.
    pub async fn current() -> Result<Option<String>, String> {
        match nft(&["list", "table", "ip", TABLE], None).await {
            Ok(text) => Ok(Some(normalise(&text))),
            Err(e) if e.contains("No such file or directory") => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Keeps the rules in place: call `check` periodically.
pub struct MasqKeeper {
    rules: MasqRules,
    /// The kernel's rendering right after our last apply.
    applied: Option<String>,
}

impl MasqKeeper {
    pub async fn start(rules: MasqRules) -> Result<Self, String> {
        let mut keeper = Self {
            rules,
            applied: None,
        };
        keeper.install().await?;
        Ok(keeper)
    }

    async fn install(&mut self) -> Result<(), String> {
        if self.rules.wanted() {
            self.rules.apply().await?;
            self.applied = MasqRules::current().await?;
        } else {
            MasqRules::remove().await?;
            self.applied = None;
        }
        Ok(())
    }

    /// Rewrites the table if it differs from what we installed; returns
    /// whether it had to.
    pub async fn check(&mut self) -> Result<bool, String> {
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
async fn nft(args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let what = format!("nft {}", args.join(" "));
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("run nft (install the nftables package): {e}"))?;
    let run = async {
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A write error shows up as nft's own failure below.
            let _ = pipe.write_all(text.as_bytes()).await;
        }
        child.wait_with_output().await
    };
    let out = match tokio::time::timeout(NFT_TIMEOUT, run).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(format!("{what}: wait: {e}")),
        Err(_) => return Err(format!("{what}: no answer within {NFT_TIMEOUT:?}")),
    };
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "{what}: {}",
            err.lines().next().unwrap_or("failed").trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_follow_flannel() {
        let r = MasqRules {
            network: "10.244.0.0/16".parse().expect("cidr"),
            subnet: "10.244.3.0/24".parse().expect("cidr"),
            masquerade: true,
            forward: true,
            fully_random: true,
        };
        let body = r.body();
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
        assert!(!plain.body().contains("fully-random"));
        assert!(!plain.body().contains("chain forward"));
    }
}
