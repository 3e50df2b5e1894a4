//! flanneld: flags → lease store → network config → external interface →
//! `daemon::run`. Sets up logging (stderr only, text or JSON) and the tokio
//! runtime; every error ends as one log line (`error::chain`) and exit 1
//! (bad flags: one line and exit 2).
//!
//! Owns the wiring only: no kernel write, no lease logic of its own.

use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use flanneld::cli::{Cli, LogFormat};
use flanneld::daemon::{self, Settings};
use flanneld::error::{chain, DaemonError};
use flanneld::lease::{self, LeaseTiming};

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                std::process::exit(0);
            }
            // One line: clap's first, without the usage block.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("flanneld: {}", first.trim_start_matches("error: "));
            std::process::exit(2);
        }
    };
    init_logging(cli.log_format);
    flanneld::heap::one_arena();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fail(DaemonError::Runtime(e)),
    };
    match rt.block_on(run(cli)) {
        Ok(daemon::Exit::Stopped) => std::process::exit(0),
        Err(e) => fail(e),
    }
}

/// The error and its sources as one line ("a: b: c"), then exit 1.
fn fail(e: DaemonError) -> ! {
    tracing::error!("{}", chain(&e));
    std::process::exit(1);
}

/// Logs to stderr: text (the target left out), or with `--log-format
/// json` one object per line: timestamp, level, target, message, fields.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_target(true)
            .init(),
    }
}

async fn run(cli: Cli) -> Result<daemon::Exit, DaemonError> {
    let timing = LeaseTiming {
        ttl: Duration::from_secs(cli.lease_ttl),
        renew_margin: Duration::from_secs(cli.subnet_lease_renew_margin * 60),
    };
    let store_kind = cli.store_kind()?.name();
    let store_config = cli.store_config()?;
    let store = lease::open(store_config, timing)
        .await
        .map_err(DaemonError::OpenStore)?;
    let config = store
        .network_config()
        .await
        .map_err(DaemonError::ReadConfig)?;

    let (conn, handle, _) = rtnetlink::new_connection().map_err(DaemonError::Netlink)?;
    tokio::spawn(conn);
    // IPv6-only: the interface is chosen by its global IPv6 address, and
    // the lease's `PublicIP` is 0.0.0.0 (flannel's empty IPv4).
    let ipv6_only = config.ipv4.is_none();
    let ext = flanneld::iface::select(&handle, &cli.iface, &cli.iface_regex, ipv6_only).await?;
    let public_ip = match (ext.addr, ipv6_only) {
        (_, true) => Ipv4Addr::UNSPECIFIED,
        (IpAddr::V4(a), false) => cli.public_ip.unwrap_or(a),
        (IpAddr::V6(a), false) => cli.public_ip.ok_or_else(|| DaemonError::NoIpv4OnIface {
            iface: ext.name.clone(),
            addr: a,
        })?,
    };
    tracing::info!(iface = %ext.name, addr = %ext.addr, %public_ip, mtu = ext.mtu, "external interface");
    let public_ipv6 = match (config.ipv6, ext.addr) {
        // The address the interface was chosen by, as flannel takes it.
        (Some(_), IpAddr::V6(a)) if cli.public_ipv6.is_none() => Some(a),
        (Some(_), _) => Some(flanneld::iface::public_ipv6(&handle, &ext, cli.public_ipv6).await?),
        (None, _) => None,
    };
    let settings = Settings {
        ext,
        public_ip,
        public_ipv6,
        subnet_file: cli.subnet_file.clone(),
        ip_masq: cli.ip_masq,
        forward_rules: cli.iptables_forward_rules,
        fully_random: !cli.ip_masq_fully_random_disable,
        rules_resync: Duration::from_secs(cli.iptables_resync.max(1)),
        timing,
        resync_interval: Duration::from_secs(cli.resync_interval),
        healthz: (cli.healthz_port != 0).then(|| SocketAddr::new(cli.healthz_ip, cli.healthz_port)),
        metrics: Arc::new(flanneld::metrics::Metrics::new()),
        store_kind,
    };
    daemon::run(store, config, settings, handle).await
}
