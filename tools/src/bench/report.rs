//! Percentiles and the printed comparison table.
//!
//! Arithmetic and formatting only; it measures nothing and sets no target as
//! a failure.

use std::time::Duration;

/// Median (mean of the two middle values for an even count).
pub fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    match s.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2,
    }
}

/// Nearest-rank percentile `p` (0 < p ≤ 100).
pub fn percentile(v: &[Duration], p: f64) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    if s.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// One line of the table: a metric measured on both sides, and the target
/// ratio (ours / reference) it has to meet, if any.
pub struct Row {
    pub metric: String,
    pub ours: Duration,
    pub reference: Duration,
    pub target: Option<f64>,
}

impl Row {
    pub fn new(metric: &str, ours: Duration, reference: Duration, target: Option<f64>) -> Row {
        Row {
            metric: metric.to_owned(),
            ours,
            reference,
            target,
        }
    }

    pub fn ratio(&self) -> f64 {
        if self.reference.is_zero() {
            f64::INFINITY
        } else {
            self.ours.as_secs_f64() / self.reference.as_secs_f64()
        }
    }

    /// `Some(met?)` for rows with a target.
    pub fn met(&self) -> Option<bool> {
        self.target.map(|t| self.ratio() <= t)
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// The table: metric | flannel-rs | reference | ratio | target | result.
pub fn table(rows: &[Row]) -> String {
    let head = [
        "metric",
        "flannel-rs",
        "reference",
        "ratio",
        "target",
        "result",
    ];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.metric.clone(),
                ms(r.ours),
                ms(r.reference),
                format!("{:.3}x", r.ratio()),
                r.target
                    .map(|t| format!("<= {t}x"))
                    .unwrap_or_else(|| "-".into()),
                match r.met() {
                    Some(true) => "met".into(),
                    Some(false) => "NOT MET".into(),
                    None => "(info)".into(),
                },
            ]
        })
        .collect();
    let mut width = head.map(str::len);
    for c in &cells {
        for (w, s) in width.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let line = |c: &[String]| {
        let parts: Vec<String> = c
            .iter()
            .zip(width)
            .enumerate()
            .map(|(i, (s, w))| {
                if i == 0 {
                    format!("{s:<w$}")
                } else {
                    format!("{s:>w$}")
                }
            })
            .collect();
        format!("| {} |\n", parts.join(" | "))
    };
    let mut out = line(&head.map(str::to_owned));
    let sep: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&format!("|-{}-|\n", sep.join("-|-")));
    for c in &cells {
        out.push_str(&line(c));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&x| Duration::from_millis(x)).collect()
    }

    #[test]
    fn percentiles() {
        assert_eq!(median(&d(&[3, 1, 2])), Duration::from_millis(2));
        assert_eq!(median(&d(&[4, 1, 2, 3])), Duration::from_micros(2500));
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&d(&hundred), 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&d(&[5]), 99.0), Duration::from_millis(5));
    }
}
