//! The documentation keeps up with the code: every configuration key is in the README's table
//! and in the commented example configuration, and that example is accepted by the parser.

use muc_eventsource::config::{self, KEYS, Reload, Value};

fn read(path: &str) -> String {
    let path = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The README's key table, one row per entry of `config::KEYS`, in its order: default,
/// accepted numbers, whether `SIGHUP` applies it, help.
fn key_table() -> String {
    let mut table =
        String::from("| key | default | range | on `SIGHUP` | meaning |\n|---|---|---|---|---|\n");
    for key in KEYS {
        let default = match key.default {
            None => "— (required)".to_string(),
            Some("") => "(none)".to_string(),
            Some(d) => format!("`{d}`"),
        };
        let range = match key.value {
            Value::Number { min, max, .. } => format!("{min}–{max}"),
            Value::Text(_) | Value::List(_) => String::new(),
        };
        let reload = match key.reload {
            Reload::Live => "applied",
            Reload::Restart => "restart",
        };
        table.push_str(&format!(
            "| `{}` | {default} | {range} | {reload} | {} |\n",
            key.name, key.help
        ));
    }
    table
}

#[test]
fn every_key_is_documented() {
    let readme = read("README.md");
    let table = key_table();
    assert!(
        readme.contains(&table),
        "README.md's key table is not the one config::KEYS gives; replace it with:\n{table}"
    );
    let example = read("systemd/muc-eventsource.conf.example");
    for key in KEYS {
        assert!(
            example.contains(&format!("#{} =", key.name))
                || example.contains(&format!("\n{} =", key.name)),
            "the example configuration lacks `{}`",
            key.name
        );
    }
}

#[test]
fn the_example_configuration_parses_once_filled_in() {
    let example = read("systemd/muc-eventsource.conf.example");
    // Uncomment the required keys, as the file tells its reader to.
    let filled: String = example
        .lines()
        .map(|line| {
            let required = ["component", "secret", "muc", "rooms"];
            match line.strip_prefix('#') {
                Some(rest) if required.iter().any(|k| rest.starts_with(&format!("{k} ="))) => {
                    rest.to_string()
                }
                _ => line.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let parsed = config::parse("muc-eventsource.conf.example", &filled);
    assert!(parsed.is_ok(), "{}", parsed.unwrap_err());
}

/// Markdown link targets `](…)` in `text`.
fn link_targets(text: &str) -> Vec<String> {
    text.split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .map(|target| target.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

#[test]
fn every_link_resolves_inside_the_repository() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .canonicalize()
        .expect("repository root");
    let mut pages = vec![
        "README.md".to_string(),
        "cross/README.md".into(),
        "openwrt/README.md".into(),
    ];
    for entry in std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".md") {
            pages.push(format!("docs/{name}"));
        }
    }
    let mut checked = 0;
    for page in &pages {
        let text = read(page);
        let dir = root
            .join(page)
            .parent()
            .expect("a page's dir")
            .to_path_buf();
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with('#') || target.starts_with("mailto:") {
                continue;
            }
            let path = target.split('#').next().unwrap_or("");
            let resolved = dir.join(path).canonicalize();
            assert!(
                resolved.as_ref().is_ok_and(|p| p.starts_with(&root)),
                "{page}: the link `{target}` does not resolve inside the repository ({resolved:?})"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 5,
        "only {checked} links found: is link_targets broken?"
    );
}
