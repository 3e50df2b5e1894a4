//! Command line: flannel's flag names and defaults, each also readable
//! from `FLANNELD_<UPPER_SNAKE>`. flannel-rs additions are marked.
//!
//! Owns the flags and their turning into a `StoreConfig` (which store, and
//! its settings); it reads no file and opens no connection: that is
//! `lease::open`'s.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use clap::{ArgAction, Parser};

use crate::lease::etcd::EtcdConfig;
use crate::lease::kube::KubeConfig;
use crate::lease::StoreConfig;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "flanneld",
    version,
    about = "flannel-rs: a VXLAN overlay network for Kubernetes"
)]
pub struct Cli {
    /// etcd endpoints, comma-separated (selects the etcd lease store;
    /// flannel's default http://127.0.0.1:4001,http://127.0.0.1:2379)
    #[arg(long, env = "FLANNELD_ETCD_ENDPOINTS")]
    pub etcd_endpoints: Option<String>,
    /// etcd prefix
    #[arg(
        long,
        env = "FLANNELD_ETCD_PREFIX",
        default_value = "/coreos.com/network"
    )]
    pub etcd_prefix: String,
    /// SSL key file used to secure etcd communication
    #[arg(long, env = "FLANNELD_ETCD_KEYFILE")]
    pub etcd_keyfile: Option<PathBuf>,
    /// SSL certification file used to secure etcd communication
    #[arg(long, env = "FLANNELD_ETCD_CERTFILE")]
    pub etcd_certfile: Option<PathBuf>,
    /// SSL Certificate Authority file used to secure etcd communication
    #[arg(long, env = "FLANNELD_ETCD_CAFILE")]
    pub etcd_cafile: Option<PathBuf>,
    /// username for BasicAuth to etcd
    #[arg(long, env = "FLANNELD_ETCD_USERNAME")]
    pub etcd_username: Option<String>,
    /// password for BasicAuth to etcd
    #[arg(long, env = "FLANNELD_ETCD_PASSWORD")]
    pub etcd_password: Option<String>,

    /// interface to use (IP or name) for inter-host communication; repeatable,
    /// the first that exists wins
    #[arg(long, env = "FLANNELD_IFACE", value_delimiter = ',')]
    pub iface: Vec<String>,
    /// regex of the interface name (or IP) to use; repeatable
    #[arg(long, env = "FLANNELD_IFACE_REGEX", value_delimiter = ',')]
    pub iface_regex: Vec<String>,
    /// IP accessible by other nodes for inter-host communication
    #[arg(long, env = "FLANNELD_PUBLIC_IP")]
    pub public_ip: Option<Ipv4Addr>,
    /// IPv6 accessible by other nodes for inter-host communication (with
    /// EnableIPv6; default: the interface's first global IPv6 address)
    #[arg(long, env = "FLANNELD_PUBLIC_IPV6")]
    pub public_ipv6: Option<Ipv6Addr>,

    /// filename where env variables (subnet, MTU, ...) will be written to
    #[arg(
        long,
        env = "FLANNELD_SUBNET_FILE",
        default_value = "/run/flannel/subnet.env"
    )]
    pub subnet_file: PathBuf,
    /// minutes before the lease expires at which it is renewed
    #[arg(
        long,
        env = "FLANNELD_SUBNET_LEASE_RENEW_MARGIN",
        default_value_t = 60,
        allow_negative_numbers = true
    )]
    pub subnet_lease_renew_margin: u64,
    /// path to the network configuration file
    #[arg(
        long,
        env = "FLANNELD_NET_CONFIG_PATH",
        default_value = "/etc/kube-flannel/net-conf.json"
    )]
    pub net_config_path: PathBuf,

    /// setup IP masquerade rule for traffic destined outside of overlay network
    #[arg(long, env = "FLANNELD_IP_MASQ", action = ArgAction::Set, num_args = 0..=1,
          default_value_t = false, default_missing_value = "true")]
    pub ip_masq: bool,
    /// disable --random-fully on the MASQUERADE rules
    #[arg(long, env = "FLANNELD_IP_MASQ_FULLY_RANDOM_DISABLE", action = ArgAction::Set,
          num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub ip_masq_fully_random_disable: bool,
    /// add FORWARD accept rules for the overlay network
    #[arg(long, env = "FLANNELD_IPTABLES_FORWARD_RULES", action = ArgAction::Set,
          num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    pub iptables_forward_rules: bool,
    /// seconds between iptables rule checks
    #[arg(long, env = "FLANNELD_IPTABLES_RESYNC", default_value_t = 5)]
    pub iptables_resync: u64,

    /// use the Kubernetes API for subnet assignment
    #[arg(long, env = "FLANNELD_KUBE_SUBNET_MGR", action = ArgAction::Set, num_args = 0..=1,
          default_value_t = false, default_missing_value = "true")]
    pub kube_subnet_mgr: bool,
    /// Kubernetes API server URL (default: in-cluster configuration)
    #[arg(long, env = "FLANNELD_KUBE_API_URL")]
    pub kube_api_url: Option<String>,
    /// kubeconfig file location
    #[arg(long, env = "FLANNELD_KUBECONFIG_FILE")]
    pub kubeconfig_file: Option<PathBuf>,
    /// prefix of the node annotations flannel reads and writes
    #[arg(
        long,
        env = "FLANNELD_KUBE_ANNOTATION_PREFIX",
        default_value = "flannel.alpha.coreos.com"
    )]
    pub kube_annotation_prefix: String,
    /// set the node condition NetworkUnavailable=False once the network is up
    #[arg(long, env = "FLANNELD_SET_NODE_NETWORK_UNAVAILABLE", action = ArgAction::Set,
          num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    pub set_node_network_unavailable: bool,

    /// the IP address on which to serve /healthz and /readyz
    #[arg(long, env = "FLANNELD_HEALTHZ_IP", default_value = "0.0.0.0")]
    pub healthz_ip: IpAddr,
    /// the port on which to serve /healthz and /readyz (0 disables)
    #[arg(long, env = "FLANNELD_HEALTHZ_PORT", default_value_t = 0)]
    pub healthz_port: u16,

    /// [flannel-rs] directory of the embedded lease store (the default store
    /// when neither --etcd-endpoints nor --kube-subnet-mgr is given)
    #[arg(
        long,
        env = "FLANNELD_LEASE_DIR",
        default_value = "/var/lib/flannel/leases"
    )]
    pub lease_dir: PathBuf,
    /// [flannel-rs] lease lifetime in seconds (flannel: 24 h; at most 10 years)
    #[arg(long, env = "FLANNELD_LEASE_TTL", default_value_t = 86_400, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u64).range(2..=315_360_000))]
    pub lease_ttl: u64,
    /// [flannel-rs] seconds between full checks of the kernel state against the leases
    #[arg(long, env = "FLANNELD_RESYNC_INTERVAL", default_value_t = 5, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub resync_interval: u64,
    /// [flannel-rs] log format on stderr: text, or json (one object per line)
    #[arg(long, env = "FLANNELD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Which lease store the flags select.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    File,
    Etcd,
    Kube,
}

impl StoreKind {
    pub fn name(&self) -> &'static str {
        match self {
            StoreKind::File => "file",
            StoreKind::Etcd => "etcd",
            StoreKind::Kube => "kube",
        }
    }
}

/// Flags that parse one by one but not together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    #[error("--kube-subnet-mgr and --etcd-endpoints are exclusive: pick one lease store")]
    ExclusiveStores,
}

impl Cli {
    /// The lease store these flags name, with its settings. The kube
    /// store's node identity comes from the environment kube-flannel.yml
    /// sets through the downward API: `NODE_NAME`, else `POD_NAME` and
    /// `POD_NAMESPACE`.
    pub fn store_config(&self) -> Result<StoreConfig, CliError> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Ok(match self.store_kind()? {
            StoreKind::File => StoreConfig::File {
                dir: self.lease_dir.clone(),
                net_config_path: self.net_config_path.clone(),
            },
            StoreKind::Etcd => StoreConfig::Etcd(EtcdConfig {
                endpoints: EtcdConfig::parse_endpoints(
                    self.etcd_endpoints.as_deref().unwrap_or_default(),
                ),
                prefix: self.etcd_prefix.clone(),
                keyfile: self.etcd_keyfile.clone(),
                certfile: self.etcd_certfile.clone(),
                cafile: self.etcd_cafile.clone(),
                username: self.etcd_username.clone(),
                password: self.etcd_password.clone(),
            }),
            StoreKind::Kube => StoreConfig::Kube(KubeConfig {
                api_url: self.kube_api_url.clone(),
                kubeconfig: self.kubeconfig_file.clone(),
                annotation_prefix: self.kube_annotation_prefix.clone(),
                set_network_unavailable: self.set_node_network_unavailable,
                net_config_path: self.net_config_path.clone(),
                node_name: env("NODE_NAME"),
                pod_name: env("POD_NAME"),
                pod_namespace: env("POD_NAMESPACE"),
            }),
        })
    }

    pub fn store_kind(&self) -> Result<StoreKind, CliError> {
        match (self.kube_subnet_mgr, self.etcd_endpoints.is_some()) {
            (true, true) => Err(CliError::ExclusiveStores),
            (true, false) => Ok(StoreKind::Kube),
            (false, true) => Ok(StoreKind::Etcd),
            (false, false) => Ok(StoreKind::File),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("flanneld").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_match_flannel() {
        let c = parse(&[]).expect("valid");
        assert_eq!(c.subnet_file, PathBuf::from("/run/flannel/subnet.env"));
        assert_eq!(c.subnet_lease_renew_margin, 60);
        assert_eq!(c.etcd_prefix, "/coreos.com/network");
        assert!(c.iptables_forward_rules && !c.ip_masq);
        assert_eq!(c.store_kind(), Ok(StoreKind::File));
    }

    #[test]
    fn flags_parse_like_flannel() {
        let c = parse(&[
            "--ip-masq",
            "--iface",
            "eth1",
            "--iface=10.0.0.2",
            "--iptables-forward-rules=false",
        ])
        .expect("valid");
        assert!(c.ip_masq);
        assert_eq!(c.iface, vec!["eth1", "10.0.0.2"]);
        assert!(!c.iptables_forward_rules);
        assert!(parse(&["--public-ip", "banana"]).is_err());
        assert!(parse(&["--no-such-flag"]).is_err());
        assert_eq!(parse(&[]).expect("valid").log_format, LogFormat::Text);
        let json = parse(&["--log-format", "json"]).expect("valid");
        assert_eq!(json.log_format, LogFormat::Json);
        assert!(parse(&["--log-format", "xml"]).is_err());
        let both =
            parse(&["--kube-subnet-mgr", "--etcd-endpoints", "http://x:2379"]).expect("parses");
        assert!(both.store_kind().is_err());
    }
}
