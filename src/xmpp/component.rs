//! The component: runs the link (`link.rs`) session after session, and over each session
//! observes the rooms — disco#info before joining (muc-eventsource never creates a room), join,
//! leave, self-ping, configuration changes, archive fills and resume fetches (IQ ids typed in
//! `iq.rs`) — publishing what rooms say into the room table through each room's [`Feed`].
//!
//! This task is the only writer of the upstream socket and the only publisher into the rooms.
//! Every value it puts into a stanza goes through [`XmlText`](super::text::XmlText).

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use async_io::Timer;
use futures_lite::{AsyncReadExt, StreamExt, future};

use super::iq::{self, IqId, NS_DISCO_ITEMS};
use super::link::{self, Backoff, End, NS_COMPONENT, NS_STREAMS, Upstream};
use super::muc;
use super::observer::sync_links;
use super::session::{Phase, Query, RoomLink, Session};
use super::stream::{Element, Piece};
use crate::config::{AuthFailure, Config};
use crate::rooms::table::RoomTable;
use crate::settings::Settings;
use crate::shutdown::Shutdown;

/// How long the server may take to answer the stream header and the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// Why the component task stopped for good.
#[derive(Debug)]
pub enum Fatal {
    /// The server rejected the secret and `auth_failure = exit`.
    AuthRejected,
}

/// Runs the component link until shutdown, reconnecting with exponential back-off and jitter.
pub async fn run(settings: &Settings, table: &RoomTable, shutdown: &Shutdown) -> Result<(), Fatal> {
    let mut backoff = Backoff::new(&settings.get());
    let mut links: Vec<RoomLink> = Vec::new();
    let mut sessions = 0u64;
    loop {
        if sessions > 0 {
            table.stats().reconnects.add(1);
        }
        sessions += 1;
        let mut established = false;
        let end = session(settings, table, shutdown, &mut links, &mut established).await;
        let current = settings.get();
        let config: &Config = &current;
        if established {
            backoff.reset(config);
        }
        table.stats().upstream_up.set(false);
        let reason = match &end {
            End::Shutdown => "the server is stopping or restarting".to_string(),
            End::AuthRejected(_) => "the XMPP server rejected this service".to_string(),
            End::Lost(why) => format!("link to the XMPP server lost: {why}"),
        };
        let status = if matches!(end, End::Shutdown) {
            "shutdown"
        } else {
            "reconnecting"
        };
        super::observer::link_lost(table, &mut links, status, &reason);
        match end {
            End::Shutdown => return Ok(()),
            End::AuthRejected(why) => {
                log::error!(
                    "the XMPP server rejected the component secret for `{}` ({why}): check `secret` in the config against the server's (Prosody: `component_secret` of Component \"{}\"; ejabberd: the listener's `password`)",
                    config.component,
                    config.component
                );
                if config.auth_failure == AuthFailure::Exit {
                    return Err(Fatal::AuthRejected);
                }
            }
            End::Lost(why) => {
                log::warn!("upstream link to {} lost: {why}", config.upstream);
                crate::notify::status(&format!("reconnecting to {}: {why}", config.upstream));
            }
        }
        let wait = backoff.next_wait(config);
        log::info!(
            "reconnecting to {} in {:.1} s",
            config.upstream,
            wait.as_secs_f64()
        );
        let slept = future::or(
            async {
                Timer::after(wait).await;
                true
            },
            async {
                shutdown.wait().await;
                false
            },
        )
        .await;
        if !slept {
            return Ok(());
        }
    }
}

async fn session(
    settings: &Settings,
    table: &RoomTable,
    shutdown: &Shutdown,
    links: &mut Vec<RoomLink>,
    established: &mut bool,
) -> End {
    let config = settings.get();
    let socket = match link::connect(&config).await {
        Ok(s) => s,
        Err(end) => return end,
    };
    let mut up = Upstream::new(socket, &config);
    let mut buf = vec![0u8; 16 * 1024];
    let shaken = future::or(
        async { Some(link::handshake(&config, &mut up, &mut buf).await) },
        async {
            Timer::after(HANDSHAKE_TIMEOUT).await;
            None
        },
    );
    let shaken = future::or(shaken, async {
        shutdown.wait().await;
        Some(Err(End::Shutdown))
    })
    .await;
    match shaken {
        Some(Ok(())) => {}
        Some(Err(end)) => return end,
        None => return End::Lost(format!("no handshake answer within {HANDSHAKE_TIMEOUT:?}")),
    }
    log::info!(
        "component handshake accepted: connected to {} as {}",
        config.upstream,
        config.component
    );
    table.stats().upstream_up.set(true);
    crate::notify::ready();
    crate::notify::status(&format!(
        "connected to {} as {}; joining {} rooms",
        config.upstream,
        config.component,
        links.len()
    ));
    let mut s = Session {
        settings,
        config,
        table,
        up,
        links,
        resumes: HashMap::new(),
        fills: HashMap::new(),
        resumes_sent: 0,
    };
    let served = s.serve(shutdown, &mut buf, established).await;
    for (_, query) in s.resumes.drain() {
        if let Query::Resume { fetch, .. } = query {
            fetch.finish(Err("the link to the XMPP server was lost".into()));
            table.archive.done();
        }
    }
    // A fill cut short is started again after the next join (its feed still holds).
    s.fills.clear();
    match served {
        Ok(()) => {
            s.leave_all().await;
            End::Shutdown
        }
        Err(end) => end,
    }
}

enum Wake {
    Read(io::Result<usize>),
    Tick,
    Shutdown,
}

impl Session<'_> {
    /// The session loop after the handshake. `Ok` means shutdown was requested.
    async fn serve(
        &mut self,
        shutdown: &Shutdown,
        buf: &mut [u8],
        established: &mut bool,
    ) -> Result<(), End> {
        sync_links(&self.config, self.table, self.links);
        for index in 0..self.links.len() {
            if self.links[index].phase == Phase::Checking {
                self.check_room(index).await?;
            }
        }
        let mut tick = Timer::interval(Duration::from_secs(1));
        let mut next_discovery = Instant::now();
        loop {
            self.config = self.settings.get();
            let wake = future::or(
                async { Wake::Read((&self.up.socket).read(buf).await) },
                future::or(
                    async {
                        tick.next().await;
                        Wake::Tick
                    },
                    async {
                        shutdown.wait().await;
                        Wake::Shutdown
                    },
                ),
            )
            .await;
            match wake {
                Wake::Shutdown => return Ok(()),
                Wake::Tick => self.tick(&mut next_discovery).await?,
                Wake::Read(read) => {
                    let n = read?;
                    if n == 0 {
                        return Err(End::Lost("the server closed the connection".into()));
                    }
                    self.read(&buf[..n]).await?;
                }
            }
            if !*established && self.joined() {
                *established = true;
                log::debug!("every room is joined or settled: the back-off starts over");
            }
        }
    }

    /// No room is between being asked for and being joined (or refused).
    fn joined(&self) -> bool {
        self.links
            .iter()
            .all(|l| !matches!(l.phase, Phase::Checking | Phase::Joining))
    }

    /// Handles what one read brought: the events of one read go out together (one `writev`
    /// per subscriber).
    async fn read(&mut self, bytes: &[u8]) -> Result<(), End> {
        self.up.last_read = Instant::now();
        self.up.ping_sent = None;
        self.up.splitter.feed(bytes);
        let batch = self.table.batch();
        loop {
            let stanza = match self.up.splitter.next_piece()? {
                None => break,
                Some(Piece::Stanza(bytes)) => Element::parse(bytes, NS_COMPONENT)?,
                Some(Piece::Close) => {
                    return Err(End::Lost("the server closed the stream".into()));
                }
                Some(Piece::Open(_)) => {
                    return Err(End::Lost("unexpected second stream header".into()));
                }
            };
            self.handle(&stanza).await?;
            if batch.pressing() {
                // Half a ring held back: send it, and let the tasks this woke write before
                // more is published, so a burst bigger than a ring does not lap fast readers.
                batch.flush();
                future::yield_now().await;
            }
        }
        Ok(())
    }

    /// Once a second: keepalive, link ping, archive queries, room table changes, discovery,
    /// on-demand joins and leaves, self-pings, retries, answers that never came.
    async fn tick(&mut self, next_discovery: &mut Instant) -> Result<(), End> {
        let config = self.config.clone();
        if self.up.last_write.elapsed() >= config.keepalive {
            self.up.send(" ").await?;
        }
        // A half-open link reads nothing forever: after `keepalive` of silence, ping the MUC
        // service; any answer (even an error) proves the link.
        match self.up.ping_sent {
            Some(sent) if sent.elapsed() >= config.ping_timeout => {
                return Err(End::Lost(format!(
                    "no answer to a ping within {} s; the link is dead",
                    config.ping_timeout.as_secs()
                )));
            }
            None if self.up.last_read.elapsed() >= config.keepalive => {
                self.up.ping_sent = Some(Instant::now());
                match iq::ping(IqId::LinkPing, &config.component, &config.muc) {
                    Ok(xml) => self.up.send(&xml).await?,
                    Err(bad) => log::warn!("cannot ping `muc`: it {bad}"),
                }
            }
            _ => {}
        }
        let now = Instant::now();
        self.send_resume_queries().await?;
        self.settings.add_pending(self.table);
        let todo = sync_links(&config, self.table, self.links);
        for (jid, nick) in todo.leave {
            log::info!("leaving {jid}: no longer served");
            if let Ok(xml) = muc::leave(&config.component, &jid, &nick) {
                self.up.send(&xml).await?;
            }
        }
        for index in todo.join {
            self.check_room(index).await?;
        }
        if config.all_rooms && now >= *next_discovery {
            *next_discovery = now + config.discover_every;
            match iq::query(
                IqId::RoomsList,
                &config.component,
                &config.muc,
                NS_DISCO_ITEMS,
            ) {
                Ok(xml) => self.up.send(&xml).await?,
                Err(bad) => log::warn!("cannot list the rooms of `muc`: it {bad}"),
            }
        }
        for index in 0..self.links.len() {
            self.on_demand(index, now).await?;
            self.self_ping(index, now).await?;
            self.overdue(index, now).await?;
        }
        Ok(())
    }

    /// Leaves every room and closes the stream (shutdown).
    async fn leave_all(&mut self) {
        for (index, link) in self.links.iter().enumerate() {
            if link.phase == Phase::Joined
                && let Ok(xml) = muc::leave(
                    &self.config.component,
                    &self.table.room(index).jid(),
                    &link.nick,
                )
            {
                let _ = self.up.send(&xml).await;
            }
        }
        let _ = self.up.send("</stream:stream>").await;
        log::info!("left all rooms and closed the component stream");
    }

    /// The index of the served room with this bare JID, if the stanza is from one.
    pub(super) fn served(&self, jid: &str) -> Option<usize> {
        self.table
            .find_jid(jid)
            .filter(|&i| !self.table.room(i).is_free() && i < self.links.len())
    }

    async fn handle(&mut self, stanza: &Element) -> Result<(), End> {
        log::trace!("upstream -> {stanza:?}");
        if stanza.name == "error" && stanza.ns == NS_STREAMS {
            return Err(End::Lost(format!(
                "stream error from the server: {}",
                link::stream_error_condition(stanza)
            )));
        }
        if stanza.name == "iq" {
            return self.handle_iq(stanza).await;
        }
        if stanza.name == "message" && self.archive_result(stanza) {
            return Ok(());
        }
        let from_room = stanza
            .attr("from")
            .and_then(|from| self.served(muc::split_jid(from).0));
        let event = muc::classify(stanza, from_room.map(|i| self.links[i].nick.as_str()));
        if let Some(index) = from_room {
            self.links[index].last_heard = Instant::now();
            self.observe(index, event).await?;
        }
        Ok(())
    }
}
