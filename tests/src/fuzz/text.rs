//! Nasty strings and line-based mutations: what a fuzzer feeds a parser of
//! text (`subnet.env`, CIDRs, MACs, keys, environment variables).
//!
//! Generators only: they run nothing and read no file.

use proptest::prelude::*;

/// Strings that trip parsers: empty, whitespace and control characters,
/// NULs, non-ASCII and non-BMP characters, signs and leading zeros on
/// numbers, near-valid addresses, numbers past every integer type, and a
/// few very long ones (up to 64 KiB).
pub fn nasty_string() -> BoxedStrategy<String> {
    let fixed = prop::sample::select(vec![
        "",
        " ",
        "\0",
        "\t",
        "\r\n",
        "\u{a0}",
        "\u{85}",
        "\u{2003}",
        "\u{3000}",
        "\u{feff}",
        "\u{fffd}",
        "é",
        "😀",
        "eth0",
        "+1",
        "-1",
        "0",
        "00",
        "024",
        "+24",
        "1e3",
        "0x10",
        "NaN",
        "true",
        "null",
        "18446744073709551616",
        "-9223372036854775809",
        "340282366920938463463374607431768211456",
        "10.244.1.0/24",
        "10.244.1.1/24",
        "10.244.1.0/+24",
        "10.244.1.0/024",
        "10.244.1.0/255.255.255.0",
        "10.244.1.0",
        "10.244.1",
        "010.244.1.0/24",
        "10.244.1.0/33",
        "10.244.1.0//24",
        "::1",
        "fc00::/64",
        "c6:d2:32:6f:8f:44",
        "C6-D2-32-6F-8F-44",
        "c6:d2:32:6f:8f",
        "../..",
        "/",
        "%d",
        "a;b=c",
        "=",
        "\"",
        "\\",
    ])
    .prop_map(str::to_string);
    prop_oneof![
        3 => fixed.clone(),
        2 => prop::collection::vec(fixed, 2..4).prop_map(|parts| parts.concat()),
        3 => any::<String>(),
        2 => "[ -~]{0,40}",
        1 => (prop::sample::select(vec!['a', '0', '\0', 'é', ' ']), 1000usize..65536)
            .prop_map(|(c, n)| std::iter::repeat_n(c, n).collect()),
    ]
    .boxed()
}

/// One edit of a text document, applied by [`mutate_lines`].
#[derive(Debug, Clone)]
pub enum LineEdit {
    /// Drops a line.
    Drop(prop::sample::Index),
    /// Repeats a line.
    Duplicate(prop::sample::Index),
    /// Replaces what follows the first `=` of a line.
    Value(prop::sample::Index, String),
    /// Changes the case of a line's key.
    KeyCase(prop::sample::Index, bool),
    /// Inserts a line.
    Insert(prop::sample::Index, String),
    /// Cuts the document at a byte.
    Truncate(prop::sample::Index),
    /// Uses `\r\n` line ends.
    Crlf,
}

/// Up to `max` random edits of a line-based document.
pub fn line_edits(max: usize) -> impl Strategy<Value = Vec<LineEdit>> {
    let idx = any::<prop::sample::Index>;
    let edit = prop_oneof![
        1 => idx().prop_map(LineEdit::Drop),
        1 => idx().prop_map(LineEdit::Duplicate),
        3 => (idx(), nasty_string()).prop_map(|(i, s)| LineEdit::Value(i, s)),
        1 => (idx(), any::<bool>()).prop_map(|(i, up)| LineEdit::KeyCase(i, up)),
        1 => (idx(), nasty_string()).prop_map(|(i, s)| LineEdit::Insert(i, s)),
        1 => idx().prop_map(LineEdit::Truncate),
        1 => Just(LineEdit::Crlf),
    ];
    prop::collection::vec(edit, 1..=max)
}

/// Applies `edits` to `doc`, line by line.
pub fn mutate_lines(doc: &str, edits: &[LineEdit]) -> String {
    let mut lines: Vec<String> = doc.lines().map(str::to_string).collect();
    let mut crlf = false;
    for edit in edits {
        let n = lines.len();
        match edit {
            LineEdit::Drop(i) if n > 0 => {
                lines.remove(i.index(n));
            }
            LineEdit::Duplicate(i) if n > 0 => {
                let line = lines[i.index(n)].clone();
                lines.insert(i.index(n), line);
            }
            LineEdit::Value(i, v) if n > 0 => {
                let line = &mut lines[i.index(n)];
                if let Some((k, _)) = line.split_once('=') {
                    *line = format!("{k}={v}");
                }
            }
            LineEdit::KeyCase(i, up) if n > 0 => {
                let line = &mut lines[i.index(n)];
                if let Some((k, v)) = line.split_once('=') {
                    let k = if *up {
                        k.to_uppercase()
                    } else {
                        k.to_lowercase()
                    };
                    *line = format!("{k}={v}");
                }
            }
            LineEdit::Insert(i, s) => lines.insert(i.index(n + 1), s.clone()),
            LineEdit::Truncate(i) => {
                let text = lines.join("\n");
                let mut cut = i.index(text.len() + 1);
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                lines = text[..cut].lines().map(str::to_string).collect();
            }
            LineEdit::Crlf => crlf = true,
            _ => {}
        }
    }
    let end = if crlf { "\r\n" } else { "\n" };
    let mut out = lines.join(end);
    out.push_str(end);
    out
}
