//! `GET /healthz`: `200 ok` when the component link is up and every room is joined, otherwise
//! `503` with one line saying what is wrong (for a load balancer, systemd, or a person).

use super::reply::Reply;
use crate::rooms::table::{JoinState, Room, RoomTable};

/// `Ok` when healthy, else the one-line reason (`upstream link down`, `room lobby: joining`, …;
/// several problems are joined with `; `). Rooms `listed` says this request may not see are
/// not named: `2 unlisted rooms not joined`.
pub fn check(table: &RoomTable, listed: &dyn Fn(&Room) -> bool) -> Result<(), String> {
    let mut problems = Vec::new();
    let mut unnamed = 0;
    if !table.stats().upstream_up.get() {
        problems.push("upstream link down".to_string());
    }
    for (_, room) in table.active() {
        // An on-demand room is joined only while someone reads it.
        if room.origin() == crate::rooms::table::Origin::OnDemand {
            continue;
        }
        let state = match room.state() {
            JoinState::Joined => continue,
            JoinState::Joining => "joining".to_string(),
            JoinState::Failed(why) => format!("failed ({why})"),
            JoinState::Gone(why) => format!("gone ({why})"),
        };
        if listed(room) {
            problems.push(format!("room {}: {state}", room.node()));
        } else {
            unnamed += 1;
        }
    }
    if unnamed > 0 {
        let s = if unnamed == 1 { "" } else { "s" };
        problems.push(format!("{unnamed} unlisted room{s} not joined"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        // One line, whatever a reason contains.
        Err(problems.join("; ").replace(['\r', '\n'], " "))
    }
}

pub fn reply(table: &RoomTable, listed: &dyn Fn(&Room) -> bool) -> Reply {
    let reply = match check(table, listed) {
        Ok(()) => Reply::text(200, "ok\n"),
        Err(why) => Reply::text(503, format!("{why}\n")),
    };
    reply.header("Cache-Control", "no-store")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_only_with_the_link_up_and_every_room_joined() {
        let t = RoomTable::for_tests(2, &["lobby", "news"]);
        assert_eq!(
            check(&t, &|_| true),
            Err("upstream link down; room lobby: joining; room news: joining".into())
        );
        t.stats().upstream_up.set(true);
        t.set_state(0, JoinState::Joined);
        t.set_state(1, JoinState::Failed("members only"));
        assert_eq!(
            check(&t, &|_| true),
            Err("room news: failed (members only)".into())
        );
        let r = reply(&t, &|_| true);
        assert_eq!(
            (r.status, r.body.as_slice()),
            (503, &b"room news: failed (members only)\n"[..])
        );
        t.set_state(1, JoinState::Joined);
        let r = reply(&t, &|_| true);
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok\n"[..]));
        t.set_state(0, JoinState::Gone("the room was destroyed"));
        assert_eq!(
            check(&t, &|_| true),
            Err("room lobby: gone (the room was destroyed)".into())
        );
    }
}
