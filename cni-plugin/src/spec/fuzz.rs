//! Fuzz target `cni-conf`: the network configuration on the plugin's stdin
//! (`NetConf::parse`: prevResult, runtimeConfig, the GC attachments and
//! the delegate) and `peek_version`, which picks the version of the error
//! reply. Corpus: `fuzz/corpus/cni-conf/`.

use flannel_tests::fuzz::{self, json, text::nasty_string};
use flannel_tests::fuzz_test;
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::error::{CniError, Code};

const TARGET: &str = "cni-conf";

fn seeds() -> Vec<Value> {
    let seeds = fuzz::seeds(TARGET)
        .into_iter()
        .map(|s| serde_json::from_slice(&s));
    seeds
        .collect::<Result<_, _>>()
        .expect("ok-* seeds are JSON")
}

/// Whatever stdin holds: a configuration that keeps every rule, or a CNI
/// error that main can print (see [`check_error`]).
fn check_outcome(stdin: &[u8]) -> Result<(), TestCaseError> {
    let peeked = peek_version(stdin);
    match NetConf::parse(stdin) {
        Ok(c) => {
            prop_assert_eq!(peeked.as_deref(), Some(c.version.as_str()));
            prop_assert!(validate_network_name(&c.name).is_ok(), "{:?}", c.name);
            let bridge = &c.delegate.bridge;
            prop_assert!(crate::env::validate_ifname(bridge).is_ok(), "{:?}", bridge);
            prop_assert!(c.delegate.mtu.is_none_or(|m| (576..=65535).contains(&m)));
            prop_assert!(c.subnet_file.is_absolute() && c.data_dir.is_absolute());
            prop_assert!(c.delegate.is_gateway || !c.delegate.is_default_gateway);
        }
        Err(e) => check_error(&e, peeked)?,
    }
    Ok(())
}

/// A parse error has a code parsing can give, all in the spec's set, and
/// the reply main prints for it (in the version `peek_version` found, else
/// 1.1.0) is one line of JSON holding that version, the code and the message.
fn check_error(e: &CniError, peeked: Option<String>) -> Result<(), TestCaseError> {
    let parse_codes = [
        Code::IncompatibleVersion,
        Code::UnsupportedField,
        Code::Decode,
        Code::InvalidConfig,
    ];
    prop_assert!(parse_codes.contains(&e.code), "{:?}: {}", e.code, e);
    prop_assert!(!e.msg.is_empty());
    let version = peeked.unwrap_or_else(|| "1.1.0".to_string());
    let reply = e.to_json(&version).to_string();
    prop_assert!(!reply.contains('\n'), "{}", reply);
    let back: Value =
        serde_json::from_str(&reply).map_err(|x| TestCaseError::fail(x.to_string()))?;
    prop_assert_eq!(back["cniVersion"].as_str(), Some(version.as_str()));
    prop_assert_eq!(back["code"].as_u64(), Some(e.code as u64));
    prop_assert_eq!(back["msg"].as_str(), Some(e.msg.as_str()));
    Ok(())
}

/// The parts of two configurations that must agree.
fn summary(c: &NetConf) -> String {
    let attachments = c.valid_attachments.as_ref().map(|set| {
        let mut list: Vec<_> = set.iter().collect();
        list.sort();
        format!("{list:?}")
    });
    format!(
        "{:?} {} {:?} {:?} {:?} {:?}",
        c.version, c.name, c.delegate, c.subnet_file, c.data_dir, attachments
    )
}

fuzz_test! {
    fn arbitrary_bytes(stdin in prop::collection::vec(any::<u8>(), 0..512)) {
        check_outcome(&stdin)?;
    }
}

fuzz_test! {
    fn arbitrary_text(stdin in any::<String>()) {
        check_outcome(stdin.as_bytes())?;
    }
}

fuzz_test! {
    fn mutated_corpus(stdin in json::mutated_any(&fuzz::seeds(TARGET))) {
        check_outcome(&stdin)?;
    }
}

/// Members the plugin does not read (runtimeConfig, capabilities, args,
/// unknown keys, keys in another case) change nothing, whatever they hold.
const KNOWN: [&str; 8] = [
    "cniVersion",
    "name",
    "delegate",
    "subnetFile",
    "dataDir",
    "prevResult",
    "cni.dev/valid-attachments",
    "cni.dev/attachments",
];

fuzz_test! {
    fn ignored_members_change_nothing((seed, key, value) in (
        prop::sample::select(seeds()),
        prop_oneof![
            prop::sample::select(vec!["runtimeConfig", "capabilities", "args", "type", "ipam",
                "dns", "plugins", "CNIVERSION", "Name", "Delegate"]).prop_map(String::from),
            nasty_string(),
        ].prop_filter("a member the plugin reads", |k| !KNOWN.contains(&k.as_str())),
        json::any_json(),
    )) {
        let before = NetConf::parse(seed.to_string().as_bytes());
        let mut doc = seed.clone();
        doc[key.as_str()] = value;
        let after = NetConf::parse(doc.to_string().as_bytes());
        match (before, after) {
            (Ok(b), Ok(a)) => prop_assert_eq!(summary(&b), summary(&a)),
            (b, a) => prop_assert!(false, "{:?} became {:?}", b.err(), a.err()),
        }
    }
}

/// Where each member lives and whether a value has the type it must have.
type Field = (&'static str, Option<&'static str>, fn(&Value) -> bool);

const FIELDS: [Field; 13] = [
    ("cniVersion", None, Value::is_string),
    ("name", None, Value::is_string),
    ("delegate", None, Value::is_object),
    ("subnetFile", None, Value::is_string),
    ("dataDir", None, Value::is_string),
    ("cni.dev/valid-attachments", None, Value::is_array),
    ("bridge", Some("delegate"), Value::is_string),
    ("mtu", Some("delegate"), Value::is_number),
    ("hairpinMode", Some("delegate"), Value::is_boolean),
    ("isGateway", Some("delegate"), Value::is_boolean),
    ("isDefaultGateway", Some("delegate"), Value::is_boolean),
    ("ipMasq", Some("delegate"), Value::is_boolean),
    ("promiscMode", Some("delegate"), Value::is_boolean),
];

fuzz_test! {
    /// A member of the wrong type is an error, never its default (`null`
    /// is the one value that means absent).
    fn wrong_types_are_errors((seed, (key, parent, ok_type), value) in (
        prop::sample::select(seeds()),
        prop::sample::select(FIELDS.to_vec()),
        json::any_json(),
    )) {
        prop_assume!(!value.is_null() && !ok_type(&value));
        let mut doc = seed;
        match parent {
            None => doc[key] = value,
            Some(p) => doc[p][key] = value,
        }
        let e = NetConf::parse(doc.to_string().as_bytes()).err();
        prop_assert!(e.is_some(), "accepted {}", doc);
        if let Some(e) = e {
            prop_assert!(matches!(e.code, Code::Decode | Code::InvalidConfig | Code::IncompatibleVersion));
        }
    }
}

fn valid_config() -> impl Strategy<Value = (Value, Version, Delegate)> {
    let flag = || proptest::option::of(any::<bool>());
    (
        prop::sample::select(SUPPORTED_VERSIONS.to_vec()),
        "[a-zA-Z0-9][a-zA-Z0-9_.-]{0,40}",
        proptest::option::of("[a-z][a-z0-9_.-]{0,14}"),
        proptest::option::of(576u32..=65535),
        (flag(), flag(), flag(), flag(), flag()),
        proptest::option::of("/[ -~]{0,30}"),
    )
        .prop_map(
            |(v, name, bridge, mtu, (hp, gw, dgw, masq, promisc), file)| {
                let conf = json!({
                    "cniVersion": v, "name": name, "type": "flannel", "subnetFile": file,
                    "delegate": {"bridge": bridge, "mtu": mtu, "hairpinMode": hp, "isGateway": gw,
                        "isDefaultGateway": dgw, "ipMasq": masq, "promiscMode": promisc},
                });
                let delegate = Delegate {
                    bridge: bridge.unwrap_or_else(|| DEFAULT_BRIDGE.to_string()),
                    mtu,
                    hairpin_mode: hp.unwrap_or(false),
                    is_gateway: gw.unwrap_or(true) || dgw.unwrap_or(false),
                    is_default_gateway: dgw.unwrap_or(false),
                    ip_masq: masq,
                    promisc_mode: promisc.unwrap_or(false),
                };
                let version = Version::parse(v).expect("supported");
                (conf, version, delegate)
            },
        )
}

fuzz_test! {
    /// Every valid configuration is read as written, defaults where absent.
    fn valid_configs_are_read_as_written((conf, version, delegate) in valid_config()) {
        let c = NetConf::parse(conf.to_string().as_bytes())
            .map_err(|e| TestCaseError::fail(format!("{conf}: {e}")))?;
        prop_assert_eq!(c.version, version);
        prop_assert_eq!(c.name.as_str(), conf["name"].as_str().unwrap_or_default());
        prop_assert_eq!(c.delegate, delegate);
        let file = conf["subnetFile"].as_str().unwrap_or(DEFAULT_SUBNET_FILE);
        prop_assert_eq!(c.subnet_file, PathBuf::from(file));
    }
}

#[test]
fn corpus_replay() {
    let n = fuzz::replay(TARGET, |name, stdin| {
        check_outcome(stdin).unwrap_or_else(|e| panic!("{name}: {e}"));
        NetConf::parse(stdin).map(drop).map_err(|e| e.to_string())
    });
    assert!(n >= 50, "{n} files");
}
