//! The configuration in force. `SIGHUP` re-reads the file: the room list, read tokens, room
//! passwords, the private-room policy, CORS origins, event kinds, history, `retry_ms` and the
//! log level change at once (open streams are checked again against the new access rules); every other key (addresses, the secret, table sizes) keeps its
//! start-up value until a restart, and the log says so.

use std::cell::RefCell;
use std::rc::Rc;

use crate::config::{self, Config};
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
        let mut merged = (*old).clone();
        let needs_restart: Vec<&str> = [
            ("component", old.component != new.component),
            ("secret", old.secret != new.secret),
            ("upstream", old.upstream != new.upstream),
            ("muc", old.muc != new.muc),
            ("listen", old.listen != new.listen),
            ("nick", old.nick != new.nick),
            ("max_rooms", old.max_rooms != new.max_rooms),
            (
                "max_subscribers",
                old.max_subscribers != new.max_subscribers,
            ),
            ("ring_events", old.ring_events != new.ring_events),
            ("ring_bytes", old.ring_bytes != new.ring_bytes),
            (
                "max_stanza_bytes",
                old.max_stanza_bytes != new.max_stanza_bytes,
            ),
            ("rooms = *", old.all_rooms != new.all_rooms),
            ("on_demand", old.on_demand != new.on_demand),
            ("fanout_delay_ms", old.fanout_delay != new.fanout_delay),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect();
        if !needs_restart.is_empty() {
            log::warn!(
                "reload: {} changed; that takes a restart, the running values stay",
                needs_restart.join(", ")
            );
        }
        merged.rooms = new.rooms.clone();
        merged.token = new.token.clone();
        merged.status_token = new.status_token.clone();
        merged.room_tokens = new.room_tokens.clone();
        merged.room_passwords = new.room_passwords.clone();
        merged.private_rooms = new.private_rooms;
        merged.cors_origins = new.cors_origins.clone();
        merged.events = new.events;
        merged.history = new.history.min(merged.ring_events);
        merged.retry_ms = new.retry_ms;
        merged.log_level = new.log_level;
        log::set_max_level(merged.log_level);

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
            "reloaded {}: rooms added: {}; removed: {}; tokens, CORS and the other live settings replaced",
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
