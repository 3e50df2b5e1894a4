//! The annotation names under `--kube-annotation-prefix`, by flannel's rule
//! (`pkg/subnet/kube/annotations.go`): at most one `/`; none means one is
//! appended (`flannel.alpha.coreos.com` → `flannel.alpha.coreos.com/`);
//! a prefix that then does not end in `/` or `-` gets a `-`
//! (`example.com/team` → `example.com/team-`); the result must look like
//! `fqdn/[a-z0-9_-]*`. Every name is built here and nowhere else, so the
//! VtepMAC written under a custom prefix is found again under the same
//! name (flannel reads it back with the raw prefix and misses it when the
//! prefix holds a `/`).
//!
//! Owns the names only: no API request, no parsing of values.

/// The default `--kube-annotation-prefix`.
pub const DEFAULT_PREFIX: &str = "flannel.alpha.coreos.com";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub kube_subnet_manager: String,
    pub backend_data: String,
    pub backend_type: String,
    pub public_ip: String,
    pub public_ip_overwrite: String,
    pub node_public_ip: String,
}

/// Why `--kube-annotation-prefix` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("--kube-annotation-prefix {0:?}: at most one '/' is allowed")]
    TwoSlashes(String),
    #[error("--kube-annotation-prefix {0:?}: must look like fqdn/[a-z0-9_-]* (e.g. flannel.alpha.coreos.com)")]
    Malformed(String),
}

impl Names {
    pub fn new(prefix: &str) -> Result<Names, PrefixError> {
        let mut p = prefix.to_owned();
        match p.matches('/').count() {
            0 => p.push('/'),
            1 => {}
            _ => return Err(PrefixError::TwoSlashes(prefix.to_owned())),
        }
        if !p.ends_with('/') && !p.ends_with('-') {
            p.push('-');
        }
        if !well_formed(&p) {
            return Err(PrefixError::Malformed(prefix.to_owned()));
        }
        let name = |suffix: &str| format!("{p}{suffix}");
        Ok(Names {
            kube_subnet_manager: name("kube-subnet-manager"),
            backend_data: name("backend-data"),
            backend_type: name("backend-type"),
            public_ip: name("public-ip"),
            public_ip_overwrite: name("public-ip-overwrite"),
            node_public_ip: name("node-public-ip"),
        })
    }

    /// The common start of every name (`flannel.alpha.coreos.com/`).
    pub fn prefix(&self) -> &str {
        self.backend_data.trim_end_matches("backend-data")
    }
}

/// `(?:[a-z0-9_-]+\.)+[a-z0-9_-]+/(?:[a-z0-9_-]+-)?`, whole string.
fn well_formed(p: &str) -> bool {
    let Some((domain, rest)) = p.split_once('/') else {
        return false;
    };
    let label = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    };
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2 && labels.iter().all(|l| label(l));
    let rest_ok = rest.is_empty() || (rest.ends_with('-') && label(rest));
    domain_ok && rest_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flannels_default_names() {
        let n = Names::new(DEFAULT_PREFIX).expect("default");
        assert_eq!(n.backend_data, "flannel.alpha.coreos.com/backend-data");
        assert_eq!(
            n.kube_subnet_manager,
            "flannel.alpha.coreos.com/kube-subnet-manager"
        );
        assert_eq!(
            n.public_ip_overwrite,
            "flannel.alpha.coreos.com/public-ip-overwrite"
        );
        assert_eq!(n.prefix(), "flannel.alpha.coreos.com/");
        assert_eq!(Names::new("flannel.alpha.coreos.com/").expect("slash"), n);
    }

    #[test]
    fn a_prefix_with_a_slash_gets_a_dash() {
        let n = Names::new("example.com/team").expect("custom");
        assert_eq!(n.backend_data, "example.com/team-backend-data");
        assert_eq!(n.prefix(), "example.com/team-");
        let n = Names::new("example.com/team-").expect("custom");
        assert_eq!(n.public_ip, "example.com/team-public-ip");
    }

    #[test]
    fn malformed_prefixes_are_refused() {
        for bad in [
            "a/b/c",
            "nodots",
            "Upper.case",
            "example.com/Team",
            "",
            "/x",
            "a..b/",
        ] {
            assert!(Names::new(bad).is_err(), "{bad}");
        }
    }
}
