//! Proves the integration-test harness against a real Prosody (no daemon needed): Prosody
//! starts on loopback ports, users register, two c2s clients join a MUC room, a groupchat
//! message with markup, quotes, a newline and an emoji arrives intact, the subject can be set,
//! the owner config form is accepted, the component port takes an XEP-0114 handshake with the
//! generated secret, and Prosody restarts on the same ports with accounts and rooms intact.
//! Plus the harness's pure helpers (SHA-1, JSON fields, stanza ids, client sockets).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::{Duration, Instant};
use testkit::sha1::sha1_hex;
use testkit::sock::{Opts, connect};
use testkit::sse::{SseEvent, body, data_field, field};
use testkit::xmpp::{element_text, stanza_attr, stanza_id, xml_unescape};
use testkit::{Prosody, XmppClient};

const T: Duration = Duration::from_secs(10);

#[test]
fn prosody_muc_roundtrip_subject_config_and_restart() {
    let mut prosody = Prosody::start();
    assert_eq!(prosody.domain, "localhost");
    assert_eq!(prosody.muc, "conference.localhost");
    assert_eq!(prosody.component, "sse.localhost");
    prosody.register("alice", "alice-pw");
    prosody.register("bob", "bob-pw");

    let mut alice = XmppClient::connect(&prosody, "alice", "alice-pw");
    let mut bob = XmppClient::connect(&prosody, "bob", "bob-pw");
    assert!(alice.jid.starts_with("alice@localhost/"), "{}", alice.jid);

    alice.join("lobby", "Alice");
    bob.join("lobby", "Bob");
    // Alice sees Bob arrive.
    alice.wait_for("from='lobby@conference.localhost/Bob'", T);

    let body = "<tag> & \"quotes\" \n second line 🎉";
    alice.send_groupchat("lobby", body);
    let text = bob.wait_for("second line", T);
    assert!(
        text.contains("&lt;tag&gt; &amp; &quot;quotes&quot; \n second line 🎉"),
        "escaped body not found in: {text}"
    );
    let msg = text.rsplit("<message").next().unwrap();
    let got = xml_unescape(&element_text(msg, "body").expect("body"));
    assert_eq!(got, body);
    // The sender gets the reflection too.
    alice.wait_for("second line", T);

    alice.set_subject("lobby", "Today's <topic> & more");
    let text = bob.wait_for("<subject>", T);
    assert!(
        text.contains("Today&apos;s &lt;topic&gt; &amp; more"),
        "subject not seen by bob: {text}"
    );

    alice.configure_room("lobby", &[("muc#roomconfig_membersonly", "1")]);
    // Bob is no member: Prosody removes him (status 321 or 322).
    let kicked = bob.wait_for("type='unavailable'", T);
    assert!(
        kicked.contains("code='321'") || kicked.contains("code='322'"),
        "bob not removed from members-only room: {kicked}"
    );
    // A new non-member is refused with registration-required.
    let mut bob2 = XmppClient::connect(&prosody, "bob", "bob-pw");
    let refused = bob2
        .try_join("lobby", "Bob2", "")
        .expect_err("members-only join");
    assert!(refused.contains("registration-required"), "{refused}");

    // A second room with a password.
    alice.join("news", "Alice");
    alice.configure_room(
        "news",
        &[
            ("muc#roomconfig_passwordprotectedroom", "1"),
            ("muc#roomconfig_roomsecret", "s3cret"),
        ],
    );
    let refused = bob2.try_join("news", "Bob", "").expect_err("password join");
    assert!(refused.contains("not-authorized"), "{refused}");
    bob2.join_with("news", "Bob", "<password>s3cret</password>");
    bob2.leave("news");

    // The component port speaks XEP-0114 with the generated secret.
    component_handshake(&prosody);

    let c2s_port = prosody.c2s_port;
    let component_port = prosody.component_port;
    let old_pid = prosody.pid();
    prosody.restart();
    assert_ne!(prosody.pid(), old_pid);
    assert_eq!(
        (prosody.c2s_port, prosody.component_port),
        (c2s_port, component_port)
    );

    // Old connections are gone…
    assert!(
        alice
            .try_wait_for("never-matches", Duration::from_secs(2))
            .is_none()
            && alice.is_closed(),
        "old c2s connection survived the restart"
    );
    // …accounts and persistent rooms survive; the config (members-only) too.
    let mut alice = XmppClient::connect(&prosody, "alice", "alice-pw");
    alice.join("lobby", "Alice");
    let mut bob = XmppClient::connect(&prosody, "bob", "bob-pw");
    let refused = bob
        .try_join("lobby", "Bob", "")
        .expect_err("still members-only");
    assert!(refused.contains("registration-required"), "{refused}");
    alice.send_groupchat("lobby", "after restart");
    alice.wait_for("after restart", T);
    component_handshake(&prosody);

    assert!(prosody.log().contains("Hello and welcome to Prosody"));
    let status = prosody.stop().expect("was running");
    assert!(status.success(), "prosody exit status {status}");
}

#[test]
fn stanzas_split_across_reads_and_leave() {
    let prosody = Prosody::start_with("", "modules_enabled = { \"muc_mam\" }");
    prosody.register("carol", "pw");
    prosody.register("dave", "pw");
    let mut carol = XmppClient::connect(&prosody, "carol", "pw");
    let mut dave = XmppClient::connect(&prosody, "dave", "pw");
    carol.join("split", "carol");
    dave.join("split", "dave");
    // A large body with XML-significant characters, delivered by Prosody in several reads.
    let big: String = "x<&>'\"é🎉\n".repeat(5000);
    carol.send_groupchat("split", &big);
    let (_, msg) = dave.wait_match(
        |s| s.starts_with("<message") && s.contains("<body>"),
        T,
        "big message",
    );
    assert_eq!(xml_unescape(&element_text(&msg, "body").unwrap()), big);
    // muc_mam adds a XEP-0359 stanza-id.
    assert!(
        msg.contains("urn:xmpp:sid:0"),
        "no stanza-id: {}",
        &msg[..300]
    );
    assert_eq!(
        stanza_attr(&msg, "from").as_deref(),
        Some("split@conference.localhost/carol")
    );
    dave.leave("split");
    carol.wait_for("type='unavailable'", T);
}

/// XEP-0114: stream header, stream id, SHA-1(id + secret) handshake, empty `<handshake/>`.
fn component_handshake(prosody: &Prosody) {
    let mut s = TcpStream::connect(prosody.component_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    write!(
        s,
        "<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='{}'>",
        prosody.component
    )
    .unwrap();
    let header = read_until(&mut s, "id='", "'");
    let start = header.find("id='").unwrap() + 4;
    let id = &header[start..start + header[start..].find('\'').unwrap()];
    write!(
        s,
        "<handshake>{}</handshake>",
        sha1_hex(format!("{id}{}", prosody.secret).as_bytes())
    )
    .unwrap();
    let reply = read_until(&mut s, "<handshake", "/>");
    assert!(!reply.contains("not-authorized"), "{reply}");
}

fn read_until(s: &mut TcpStream, a: &str, b: &str) -> String {
    let deadline = Instant::now() + T;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(p) = text.find(a)
            && text[p + a.len()..].contains(b)
        {
            return text;
        }
        if text.contains("</stream:stream>") || Instant::now() >= deadline {
            panic!("component stream: waiting for {a}…{b}, got {text}");
        }
        match s.read(&mut chunk) {
            Ok(0) => panic!("component stream closed: {text}"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
    }
}

// --- Pure helpers of the harness (testkit has no tests of its own: `cargo test` runs these) ---

#[test]
fn sha1_known_answers() {
    assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
    assert_eq!(sha1_hex(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    // Two blocks: the padding spills into a second 64-byte block.
    assert_eq!(
        sha1_hex(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
        "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
    );
}

#[test]
fn source_address_and_options_are_applied() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let from = Ipv4Addr::new(127, 0, 0, 7);
    let opts = Opts {
        from: Some(from),
        rcvbuf: Some(1),
        mss: Some(384),
    };
    let _client = connect(listener.local_addr().unwrap(), opts);
    let (_server, peer) = listener.accept().unwrap();
    assert_eq!(peer.ip(), from);
}

#[test]
fn stanza_id_reads_the_child_not_the_message_id() {
    let echo = "<message id='orig-1' from='lobby@muc/alice'><body>hi</body>\
                <stanza-id xmlns='urn:xmpp:sid:0' by='lobby@muc' id='Ab&amp;9'/></message>";
    assert_eq!(stanza_id(echo).as_deref(), Some("Ab&9"));
    assert_eq!(stanza_id("<message id='x'><body>hi</body></message>"), None);
}

#[test]
fn field_and_body_read_the_json_data() {
    let event = SseEvent {
        event_type: "message".into(),
        data: r#"{"body":"h\u00e9","nick":"alice","n":1}"#.into(),
        last_event_id: String::new(),
    };
    assert_eq!(body(&event), "hé");
    assert_eq!(field(&event, "nick").as_deref(), Some("alice"));
    assert_eq!(field(&event, "n"), None, "not a string");
    assert_eq!(data_field("not json", "body"), None);
}
