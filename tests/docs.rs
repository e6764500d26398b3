//! The documentation keeps up with the code: every configuration key is in the README's table
//! and in the commented example configuration, and that example is accepted by the parser.

use muc_eventsource::config::{self, KEYS};

fn read(path: &str) -> String {
    let path = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_key_is_documented() {
    let readme = read("README.md");
    let example = read("systemd/muc-eventsource.conf.example");
    for (key, _, _) in KEYS {
        assert!(
            readme.contains(&format!("| `{key}` |")),
            "README.md lacks `{key}`"
        );
        assert!(
            example.contains(&format!("#{key} =")) || example.contains(&format!("\n{key} =")),
            "the example configuration lacks `{key}`"
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
