//! What per-pod masquerade adds to our plugin's ADD and DEL, with N pods
//! already on the node (their addresses in the masquerade set, their veths
//! on the bridge): a probe pod is added and deleted again and again, its
//! config alternating between `delegate.ipMasq: true` and `false` (ABBA
//! order), on our side only. The difference of the medians is the cost.
//! Runs in `cni-bench --ip-masq` after the side-by-side phases.
//!
//! It measures our plugin only; it does not touch the reference side's
//! namespace or the host's.

use std::time::Duration;

use flannel_cluster::Pod;

use super::exec::Plugin;
use super::report::median;
use super::side::{pod_ref, wait_quiet, NsThread, Side, QUIET_TIMEOUT};

/// Probe ADD+DEL pairs per config and level.
pub const PROBES: usize = 40;

/// The medians at one level: (with masquerade, without) for ADD and DEL.
pub struct Cost {
    pub pods: usize,
    pub add: (Duration, Duration),
    pub del: (Duration, Duration),
}

/// `side`'s plugin with `delegate.ipMasq` forced to `on`.
fn with_ip_masq(plugin: &Plugin, on: bool) -> Result<Plugin, String> {
    let mut conf: serde_json::Value =
        serde_json::from_slice(&plugin.config).map_err(|e| format!("plugin config: {e}"))?;
    conf["delegate"]["ipMasq"] = serde_json::Value::Bool(on);
    Ok(Plugin {
        config: serde_json::to_vec(&conf).map_err(|e| format!("plugin config: {e}"))?,
        ..plugin.clone()
    })
}

fn call(t: &NsThread, plugin: &Plugin, verb: &'static str, pod: &Pod) -> Result<Duration, String> {
    let (plugin, pr) = (plugin.clone(), pod_ref(pod));
    t.call(move || {
        let inv = plugin.call(verb, &pr)?;
        if verb == "DEL" {
            wait_quiet(&pr.netns, QUIET_TIMEOUT)?;
        }
        Ok(inv.elapsed)
    })
}

/// For each level in `levels` (ascending), fills the node up to that many
/// resident pods from `residents` (with masquerade), then measures the
/// probe; deletes the residents at the end. `residents` must hold at least
/// the highest level.
pub fn measure(
    t: &NsThread,
    side: &Side,
    residents: &[Pod],
    probe: &Pod,
    levels: &[usize],
) -> Result<Vec<Cost>, String> {
    let on = with_ip_masq(&side.plugin, true)?;
    let off = with_ip_masq(&side.plugin, false)?;
    let mut attached = 0;
    let mut out = Vec::new();
    let result = (|| {
        for &level in levels {
            while attached < level {
                call(t, &on, "ADD", &residents[attached])?;
                attached += 1;
            }
            let mut add: [Vec<Duration>; 2] = Default::default();
            let mut del: [Vec<Duration>; 2] = Default::default();
            for i in 0..2 * PROBES {
                // ABBA: on off off on on off ...
                let which = [0, 1, 1, 0][i % 4];
                let plugin = [&on, &off][which];
                add[which].push(call(t, plugin, "ADD", probe)?);
                del[which].push(call(t, plugin, "DEL", probe)?);
            }
            out.push(Cost {
                pods: level,
                add: (median(&add[0]), median(&add[1])),
                del: (median(&del[0]), median(&del[1])),
            });
        }
        Ok(())
    })();
    // The residents go again either way; the first error is the one kept.
    let mut cleanup = Ok(());
    for pod in residents[..attached].iter().rev() {
        if let Err(e) = call(t, &on, "DEL", pod) {
            cleanup = cleanup.and(Err(e));
        }
    }
    result.and(cleanup).map(|()| out)
}

/// The table of costs, one line per level.
pub fn table(costs: &[Cost]) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut s = format!(
        "masquerade cost (flannel-rs, probe pod, ipMasq on vs off, medians of {PROBES} each)\n\
         pods on node | ADD on | ADD off | ADD +masq | DEL on | DEL off | DEL +masq | target +masq <= 1 ms\n",
    );
    for c in costs {
        let add = ms(c.add.0) - ms(c.add.1);
        let del = ms(c.del.0) - ms(c.del.1);
        s += &format!(
            "{:>12} | {:>6.2} | {:>7.2} | {:>+9.2} | {:>6.2} | {:>7.2} | {:>+9.2} | {}\n",
            c.pods,
            ms(c.add.0),
            ms(c.add.1),
            add,
            ms(c.del.0),
            ms(c.del.1),
            del,
            if add <= 1.0 { "met" } else { "MISSED" }
        );
    }
    s
}
