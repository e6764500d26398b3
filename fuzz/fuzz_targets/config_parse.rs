//! The configuration file parser, and `describe()` as a file.
//!
//! Checked, for any text:
//! * `config::parse` never panics, and an error displays;
//! * for a file that parses: `describe()` and the memory ceiling do not panic, the secret is
//!   hidden, and `describe()`'s `key = value` lines, with the comment lines dropped and each
//!   hidden value (`<… hidden>`: the secret, tokens, passwords) put back as the input file gave
//!   it, are a configuration file that parses to the very same settings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use muc_eventsource::config::parse;

/// The file's own comment rule: `#` at the start of a line or after whitespace.
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return &line[..i];
        }
    }
    line
}

/// The value the input file gives `key` (per-room keys match their room case-insensitively).
fn original_value<'t>(text: &'t str, key: &str) -> Option<&'t str> {
    text.lines().find_map(|raw| {
        let (k, v) = strip_comment(raw).trim().split_once('=')?;
        let k = k.trim();
        let same = k == key
            || match (k.split_once('.'), key.split_once('.')) {
                (Some((p, r)), Some((q, s))) => p == q && r.to_lowercase() == s,
                _ => false,
            };
        same.then(|| v.trim())
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let config = match parse("fuzz.conf", &text) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let described = config.describe();
    let _ = muc_eventsource::memory::ceiling(&config).total();
    let _ = muc_eventsource::memory::describe(&config);
    let hidden = format!("secret = <{} bytes, hidden>", config.secret.len());
    assert!(
        described.lines().any(|l| l == hidden),
        "no hidden secret line in {described:?}"
    );

    let mut file = String::new();
    for line in described.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.split_once(" = ") else {
            panic!("describe() line {line:?} is not `key = value`\n{described}");
        };
        if value.starts_with('<') && value.ends_with(" hidden>") {
            let Some(real) = original_value(&text, key) else {
                panic!(
                    "hidden {key} is not in the input\n--- input\n{text}\n--- described\n{described}"
                );
            };
            file.push_str(&format!("{key} = {real}\n"));
        } else {
            file.push_str(&format!("{line}\n"));
        }
    }
    let again = parse("described.conf", &file).unwrap_or_else(|e| {
        panic!("describe() output does not parse back: {e}\n--- input\n{text}\n--- file\n{file}")
    });
    assert_eq!(
        format!("{config:?}"),
        format!("{again:?}"),
        "describe() output parses to other settings\n--- input\n{text}\n--- file\n{file}"
    );
});
