//! What per-pod masquerade adds to our plugin's ADD and DEL, with N pods
//! already on the node (their addresses in the masquerade set, their veths
//! on the bridge): a probe pod is added and deleted again and again, its
//! config alternating between `delegate.ipMasq: true` and `false` (ABBA
//! order), on our side only. The cost is the median of the paired
//! differences (each "on" call against the "off" call next to it, so a
//! drift in the machine's load cancels), with a 95% confidence interval of
//! that median from order statistics. Runs in `cni-bench --ip-masq` after
//! the side-by-side phases.
//!
//! It measures our plugin only; it does not touch the reference side's
//! namespace or the host's.

use std::time::Duration;

use flannel_cluster::Pod;

use super::exec::Plugin;
use super::report::median;
use super::side::{pod_ref, wait_quiet, NsThread, Side, QUIET_TIMEOUT};

/// Probe ADD+DEL pairs per config and level.
pub const PROBES: usize = 100;

/// One verb's figures at one level.
pub struct VerbCost {
    /// Medians with masquerade and without.
    pub on: Duration,
    pub off: Duration,
    /// Median of the paired differences (on − off), and its 95% interval,
    /// in ms.
    pub diff: f64,
    pub interval: (f64, f64),
}

/// The figures at one level.
pub struct Cost {
    pub pods: usize,
    pub add: VerbCost,
    pub del: VerbCost,
}

impl VerbCost {
    /// `on[i]` and `off[i]` were measured next to each other.
    fn of(on: &[Duration], off: &[Duration]) -> VerbCost {
        let ms = |d: &Duration| d.as_secs_f64() * 1e3;
        let mut diffs: Vec<f64> = on.iter().zip(off).map(|(a, b)| ms(a) - ms(b)).collect();
        diffs.sort_by(f64::total_cmp);
        let n = diffs.len();
        let at = |i: usize| {
            diffs
                .get(i.min(n.saturating_sub(1)))
                .copied()
                .unwrap_or(0.0)
        };
        let diff = match n {
            0 => 0.0,
            n if n % 2 == 1 => at(n / 2),
            n => (at(n / 2 - 1) + at(n / 2)) / 2.0,
        };
        // Distribution-free interval of the median: ranks n/2 ± 1.96·√n/2.
        let half = 1.96 * (n as f64).sqrt() / 2.0;
        let lo = ((n as f64 / 2.0) - half).floor().max(0.0) as usize;
        let hi = ((n as f64 / 2.0) + half).ceil() as usize;
        VerbCost {
            on: median(on),
            off: median(off),
            diff,
            interval: (at(lo), at(hi)),
        }
    }
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
                add: VerbCost::of(&add[0], &add[1]),
                del: VerbCost::of(&del[0], &del[1]),
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
    let cell = |v: &VerbCost| {
        format!(
            "{:>6.2} | {:>6.2} | {:>+6.2} [{:+.2}, {:+.2}]",
            ms(v.on),
            ms(v.off),
            v.diff,
            v.interval.0,
            v.interval.1
        )
    };
    let mut s = format!(
        "masquerade cost (flannel-rs, probe pod, ipMasq on vs off, {PROBES} ABBA pairs; \
         +masq = median of paired differences [95% interval])\n\
         pods on node | ADD on | ADD off | ADD +masq | DEL on | DEL off | DEL +masq | target ADD +masq <= 1 ms\n",
    );
    for c in costs {
        s += &format!(
            "{:>12} | {} | {} | {}\n",
            c.pods,
            cell(&c.add),
            cell(&c.del),
            if c.add.diff <= 1.0 { "met" } else { "MISSED" }
        );
    }
    s
}
