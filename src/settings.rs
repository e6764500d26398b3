//! The configuration in force. `SIGHUP` re-reads the file and applies every key
//! `config::KEYS` marks `Reload::Live` (the room list, tokens, access policy, timeouts,
//! heartbeat, log level…) and the per-room tokens and passwords at once (open streams are
//! checked again against the new access rules); every `Reload::Restart` key that changed (the
//! addresses, the secret, table sizes) keeps its start-up value until a restart, and the log
//! names it.

use std::cell::RefCell;
use std::rc::Rc;

use crate::config::{self, Config, KEYS, Reload};
use crate::rooms::table::{Origin, RoomTable};

pub struct Settings {
    path: String,
    current: RefCell<Rc<Config>>,
    /// Rooms a reload added that found no free entry yet (a removed room's entry is free
    /// once its last subscriber has gone).
    pending: RefCell<Vec<String>>,
}

impl Settings {
    pub fn new(path: &str, config: Config) -> Settings {
        Settings {
            path: path.to_string(),
            current: RefCell::new(Rc::new(config)),
            pending: RefCell::new(Vec::new()),
        }
    }

    /// The configuration in force now.
    pub fn get(&self) -> Rc<Config> {
        self.current.borrow().clone()
    }

    /// Re-reads the file and applies what can change while running; the rooms added are given
    /// entries (the XMPP side joins them), the rooms removed are retired (their streams end).
    /// A file that does not parse changes nothing.
    pub fn reload(&self, table: &RoomTable) -> Result<(), String> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("cannot read {}: {e}", self.path))?;
        let new = config::parse(&self.path, &text).map_err(|e| e.to_string())?;
        let old = self.get();
        let (merged, needs_restart) = merge(&old, &new);
        if !needs_restart.is_empty() {
            log::warn!(
                "reload: {} changed; that takes a restart, the running values stay",
                needs_restart.join(", ")
            );
        }
        log::set_max_level(merged.log_level);
        let changed: Vec<&str> = live_changes(&old, &merged);

        let mut removed = Vec::new();
        for room in old.rooms.iter().filter(|r| !merged.rooms.contains(r)) {
            if let Some(index) = table.find_node(room) {
                table.retire(index, "the room is no longer served here");
                removed.push(room.as_str());
            }
        }
        let added: Vec<&str> = merged
            .rooms
            .iter()
            .filter(|r| !old.rooms.contains(r))
            .map(String::as_str)
            .collect();
        self.pending
            .borrow_mut()
            .extend(added.iter().map(|r| r.to_string()));
        log::info!(
            "reloaded {}: rooms added: {}; removed: {}; tokens, CORS and the other live settings replaced; changed: {}",
            self.path,
            if added.is_empty() {
                "none".into()
            } else {
                added.join(", ")
            },
            if removed.is_empty() {
                "none".into()
            } else {
                removed.join(", ")
            },
            if changed.is_empty() {
                "nothing else".into()
            } else {
                changed.join(", ")
            },
        );
        *self.current.borrow_mut() = Rc::new(merged);
        // Tokens, the private-room policy or CORS may have changed: every open stream is
        // checked again against the new values before it is sent anything more.
        table.access_changed(None);
        self.add_pending(table);
        Ok(())
    }

    /// Gives the rooms a reload added their entries, as entries become free (called on every
    /// tick of the XMPP side).
    pub fn add_pending(&self, table: &RoomTable) {
        let mut pending = self.pending.borrow_mut();
        if pending.is_empty() {
            return;
        }
        let muc = self.get().muc.clone();
        pending.retain(|room| table.add(room, &muc, Origin::Configured).is_none());
        if !pending.is_empty() {
            log::debug!(
                "waiting for a free room table entry for {} (max_rooms)",
                pending.join(", ")
            );
        }
    }
}

/// The settings a reload puts in force: `old` with every live key (and the per-room tokens and
/// passwords) taken from `new`; and the restart keys that differ, which keep their old value.
pub fn merge(old: &Config, new: &Config) -> (Config, Vec<&'static str>) {
    let mut merged = old.clone();
    let mut needs_restart: Vec<&str> = Vec::new();
    for key in KEYS.iter().filter(|k| (k.differs)(old, new)) {
        match key.reload {
            Reload::Live => (key.copy)(&mut merged, new),
            Reload::Restart => needs_restart.push(key.name),
        }
    }
    // `rooms` is live, but whether it holds `*` (discovery of every public room) is decided at
    // start-up.
    if old.all_rooms != new.all_rooms {
        needs_restart.push("rooms = *");
    }
    // The ring keeps its start-up size.
    merged.history = merged.history.min(merged.ring_events);
    merged.room_tokens = new.room_tokens.clone();
    merged.room_passwords = new.room_passwords.clone();
    (merged, needs_restart)
}

/// The live keys that differ between `old` and `merged`, for the log.
fn live_changes(old: &Config, merged: &Config) -> Vec<&'static str> {
    KEYS.iter()
        .filter(|k| k.reload == Reload::Live && (k.differs)(old, merged))
        .map(|k| k.name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Value, parse};

    const BASE: &str =
        "component = sse.localhost\nsecret = s\nmuc = conference.localhost\nrooms = lobby, news\n";

    /// A valid value of `key` other than its default.
    fn another_value(key: &config::Key) -> String {
        let text = match key.name {
            "component" => "other.localhost",
            "secret" => "t",
            "upstream" => "127.0.0.1:5348",
            "muc" => "muc.localhost",
            "rooms" => "lobby, news, extra",
            "on_demand" => "yes",
            "nick" => "watcher",
            "listen" => "127.0.0.1:9",
            "log_level" => "debug",
            "auth_failure" => "retry",
            "events" => "join",
            "token" | "status_token" => "tok",
            "private_rooms" => "allow",
            "cors_origins" => "https://a.example",
            _ => "",
        };
        if !text.is_empty() {
            return text.to_string();
        }
        let Value::Number { min, max, .. } = key.value else {
            panic!("`{}` needs a test value in another_value()", key.name);
        };
        let default: usize = key.default.unwrap_or("0").parse().unwrap();
        [min, min + 1, max, default + 1]
            .into_iter()
            .find(|n| *n != default && parse("t", &format!("{BASE}{} = {n}\n", key.name)).is_ok())
            .unwrap_or_else(|| panic!("no other value for `{}`", key.name))
            .to_string()
    }

    #[test]
    fn every_key_is_applied_on_reload_or_named_as_needing_a_restart() {
        let base = parse("t", BASE).unwrap();
        let (mut live, mut restart) = (0, 0);
        for key in KEYS {
            let value = another_value(key);
            let text = if key.default.is_none() || key.name == "rooms" {
                let line = BASE
                    .lines()
                    .find(|l| l.starts_with(&format!("{} =", key.name)))
                    .unwrap();
                BASE.replace(line, &format!("{} = {value}", key.name))
            } else {
                format!("{BASE}{} = {value}\n", key.name)
            };
            let new = parse("t", &text).unwrap_or_else(|e| panic!("{}: {e}", key.name));
            assert!(
                (key.differs)(&base, &new),
                "`{} = {value}` changes nothing",
                key.name
            );
            let (merged, needs_restart) = merge(&base, &new);
            match key.reload {
                Reload::Live => {
                    live += 1;
                    assert!(
                        !(key.differs)(&merged, &new),
                        "`{}` was not applied",
                        key.name
                    );
                    assert!(!needs_restart.contains(&key.name), "{}", key.name);
                }
                Reload::Restart => {
                    restart += 1;
                    assert!(!(key.differs)(&merged, &base), "`{}` was applied", key.name);
                    assert!(
                        needs_restart.contains(&key.name),
                        "`{}` not named",
                        key.name
                    );
                }
            }
        }
        assert_eq!(live + restart, KEYS.len());
        assert_eq!(
            (live, restart),
            (22, 17),
            "update README's key table and this count"
        );
    }

    #[test]
    fn adding_every_public_room_takes_a_restart() {
        let base = parse("t", BASE).unwrap();
        let new = parse("t", &BASE.replace("lobby, news", "lobby, news, *")).unwrap();
        let (merged, needs_restart) = merge(&base, &new);
        assert!(!merged.all_rooms);
        assert!(needs_restart.contains(&"rooms = *"), "{needs_restart:?}");
    }

    #[test]
    fn history_stays_inside_the_running_ring() {
        let base = parse("t", &format!("{BASE}ring_events = 8\nhistory = 4\n")).unwrap();
        let new = parse("t", &format!("{BASE}ring_events = 64\nhistory = 30\n")).unwrap();
        let (merged, needs_restart) = merge(&base, &new);
        assert_eq!((merged.ring_events, merged.history), (8, 8));
        assert_eq!(needs_restart, ["ring_events"]);
    }
}
