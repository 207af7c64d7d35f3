//! Replays of event sequences through the state machine, time as an input.

use std::net::Ipv4Addr;

use netgauze_bgp_pkt::BgpMessage;

use super::*;

const S: Duration = Duration::from_secs(1);

fn peer() -> Peer {
    Peer {
        name: "tor".into(),
        my_asn: 64512,
        peer_asn: Some(64500),
        dynamic: None,
        address: "10.0.0.1".parse().unwrap(),
        port: 179,
        source: None,
        router_id: Some(Ipv4Addr::new(10, 0, 0, 2)),
        hold_time: 90 * S,
        keepalive: 30 * S,
        connect_retry: 10 * S,
        multihop: false,
        graceful_restart: true,
        password: None,
        dual_stack: false,
    }
}

fn local() -> Local {
    Local {
        asn: 64512,
        router_id: Ipv4Addr::new(10, 0, 0, 2),
        hold_time: 90,
        families: vec![Family::V4],
        graceful_restart: true,
    }
}

/// The peer's OPEN: AS 64500, `hold` seconds, graceful restart when asked.
fn their_open(hold: u16, graceful: bool) -> Event {
    let theirs = Local {
        asn: 64500,
        router_id: Ipv4Addr::new(10, 0, 0, 1),
        hold_time: hold,
        families: vec![Family::V4],
        graceful_restart: graceful,
    };
    match message::open(&theirs) {
        BgpMessage::Open(open) => Event::Open(Box::new(open)),
        other => panic!("{other:?}"),
    }
}

/// A session taken to `state` at time 0.
fn at(state: BgpState) -> Fsm {
    let mut fsm = Fsm::new(peer());
    let steps: Vec<Event> = match state {
        BgpState::Idle => vec![],
        BgpState::Connect => vec![Event::Start],
        BgpState::OpenSent => vec![Event::Start, Event::TcpConnectionConfirmed(local())],
        BgpState::OpenConfirm => vec![
            Event::Start,
            Event::TcpConnectionConfirmed(local()),
            their_open(90, true),
        ],
        BgpState::Established => vec![
            Event::Start,
            Event::TcpConnectionConfirmed(local()),
            their_open(90, true),
            Event::Keepalive,
        ],
        BgpState::Active => vec![Event::Start, Event::TcpConnectionFails("refused".into())],
    };
    for step in steps {
        fsm.handle(step, Duration::ZERO);
    }
    assert_eq!(fsm.state(), state);
    fsm
}

fn sent_notification(actions: &[Action]) -> Option<String> {
    actions.iter().find_map(|a| match a {
        Action::SendNotification(n) => Some(message::describe(n)),
        _ => None,
    })
}

#[test]
fn a_session_comes_up_through_each_state_with_its_timers() {
    let mut fsm = Fsm::new(peer());
    assert_eq!(fsm.deadline(), None);
    assert_eq!(fsm.handle(Event::Start, Duration::ZERO), [Action::Connect]);
    assert_eq!(fsm.state(), BgpState::Connect);
    // Waiting for the TCP connection: the connect time (at least 3 s).
    assert_eq!(fsm.deadline(), Some(10 * S));
    assert_eq!(
        fsm.handle(Event::TcpConnectionConfirmed(local()), S),
        [Action::SendOpen(local())]
    );
    assert_eq!(fsm.state(), BgpState::OpenSent);
    assert_eq!(fsm.deadline(), Some(S + OPEN_HOLD));
    // The peer proposes 9 s: the lower hold time wins, keepalives every 3 s.
    assert_eq!(
        fsm.handle(their_open(9, true), 2 * S),
        [Action::SendKeepalive]
    );
    assert_eq!(fsm.state(), BgpState::OpenConfirm);
    assert_eq!(fsm.deadline(), Some(5 * S));
    let actions = fsm.handle(Event::Keepalive, 3 * S);
    assert!(matches!(actions.as_slice(), [Action::Established(n)] if n.hold_time == 9 * S));
    assert_eq!(fsm.state(), BgpState::Established);
    assert_eq!(fsm.tick(5 * S), [Action::SendKeepalive]);
    assert_eq!(fsm.deadline(), Some(8 * S));
    // Each KEEPALIVE or UPDATE heard restarts the hold timer.
    fsm.handle(Event::Update, 6 * S);
    fsm.tick(8 * S);
    fsm.handle(Event::Keepalive, 10 * S);
    fsm.tick(11 * S);
    assert_eq!(fsm.state(), BgpState::Established);
    assert_eq!(fsm.last_error(), None);
}

#[test]
fn the_hold_timer_expiring_in_open_confirm_sends_its_notification_and_backs_off() {
    let mut fsm = at(BgpState::OpenConfirm);
    // Our keepalives go out every 30 s; the peer never confirms.
    assert_eq!(fsm.tick(30 * S), [Action::SendKeepalive]);
    assert_eq!(fsm.tick(60 * S), [Action::SendKeepalive]);
    let actions = fsm.tick(90 * S);
    assert_eq!(
        sent_notification(&actions).as_deref(),
        Some("Hold Timer Expired")
    );
    assert!(actions.contains(&Action::Close));
    assert_eq!(fsm.state(), BgpState::Active);
    assert!(fsm.last_error().unwrap().contains("within the hold time"));
    // Then a new connection after the first back-off.
    assert_eq!(fsm.deadline(), Some(91 * S));
    assert_eq!(fsm.tick(91 * S), [Action::Connect]);
}

#[test]
fn a_notification_in_each_connected_state_ends_the_session_without_an_answer() {
    for state in [
        BgpState::OpenSent,
        BgpState::OpenConfirm,
        BgpState::Established,
    ] {
        let mut fsm = at(state);
        let cease = BgpNotificationMessage::CeaseError(CeaseError::AdministrativeReset {
            value: Box::new([]),
        });
        let actions = fsm.handle(Event::Notification(cease), S);
        assert_eq!(actions, [Action::Close], "{state:?}");
        assert_eq!(fsm.state(), BgpState::Active, "{state:?}");
        assert_eq!(
            fsm.last_error(),
            Some("received NOTIFICATION Cease / AdministrativeReset"),
            "{state:?}"
        );
    }
}

#[test]
fn an_unexpected_message_gets_the_fsm_error_of_its_state() {
    let cases = [
        (
            BgpState::OpenSent,
            Event::Keepalive,
            "ReceiveUnexpectedMessageInOpenSentState",
            "unexpected KEEPALIVE before OPEN",
        ),
        (
            BgpState::OpenConfirm,
            Event::Update,
            "ReceiveUnexpectedMessageInOpenConfirmState",
            "unexpected UPDATE before KEEPALIVE",
        ),
        (
            BgpState::Established,
            their_open(90, true),
            "ReceiveUnexpectedMessageInEstablishedState",
            "OPEN on an established session",
        ),
    ];
    for (state, event, subcode, why) in cases {
        let mut fsm = at(state);
        let actions = fsm.handle(event, S);
        let sent = sent_notification(&actions).expect("a NOTIFICATION");
        assert!(sent.ends_with(subcode), "{state:?}: {sent}");
        assert!(
            fsm.last_error().unwrap().ends_with(why),
            "{:?}",
            fsm.last_error()
        );
        assert_eq!(fsm.state(), BgpState::Active);
    }
}

#[test]
fn an_open_that_fails_its_checks_is_refused_with_the_notification_it_calls_for() {
    let mut fsm = at(BgpState::OpenSent);
    let wrong_as = {
        let theirs = Local {
            asn: 64999,
            router_id: Ipv4Addr::new(10, 0, 0, 1),
            hold_time: 90,
            families: vec![Family::V4],
            graceful_restart: false,
        };
        match message::open(&theirs) {
            BgpMessage::Open(open) => Event::Open(Box::new(open)),
            other => panic!("{other:?}"),
        }
    };
    let actions = fsm.handle(wrong_as, S);
    assert_eq!(
        sent_notification(&actions).as_deref(),
        Some("OPEN Message Error / BadPeerAs")
    );
    assert!(
        fsm.last_error().unwrap().contains("64999"),
        "{:?}",
        fsm.last_error()
    );
}

#[test]
fn a_second_connection_cannot_collide_with_the_first() {
    // Section 6.8: the speaker never accepts connections, so a collision
    // has no event; a stray confirmation changes nothing.
    for state in [
        BgpState::OpenSent,
        BgpState::OpenConfirm,
        BgpState::Established,
    ] {
        let mut fsm = at(state);
        assert!(
            fsm.handle(Event::TcpConnectionConfirmed(local()), S)
                .is_empty()
        );
        assert_eq!(fsm.state(), state);
    }
}

#[test]
fn the_back_off_doubles_to_the_connect_time_and_starts_over_after_established() {
    let mut fsm = at(BgpState::Connect);
    let mut now = Duration::ZERO;
    let mut waits = Vec::new();
    for _ in 0..6 {
        fsm.handle(Event::TcpConnectionFails("refused".into()), now);
        let next = fsm.deadline().expect("retry");
        waits.push((next - now).as_secs());
        now = next;
        assert_eq!(fsm.tick(now), [Action::Connect]);
    }
    assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
    fsm.handle(Event::TcpConnectionConfirmed(local()), now);
    fsm.handle(their_open(90, true), now);
    fsm.handle(Event::Keepalive, now);
    fsm.handle(Event::TcpConnectionFails("reset".into()), now);
    assert_eq!(fsm.deadline(), Some(now + S), "first back-off again");
}

#[test]
fn a_connect_that_gets_no_answer_names_the_password_as_a_likely_cause() {
    let mut fsm = at(BgpState::Connect);
    let actions = fsm.tick(10 * S);
    assert_eq!(actions, [Action::Close]);
    assert_eq!(
        fsm.last_error(),
        Some(
            "no answer from 10.0.0.1:179 within 10s (if the peer requires a TCP-MD5 password, set passwordSecretRef)"
        )
    );
}

#[test]
fn a_stop_says_goodbye_as_its_reason_and_graceful_restart_ask() {
    let cases = [
        (Stop::Shutdown, true, None),
        (
            Stop::Shutdown,
            false,
            Some("Cease / AdministrativeShutdown"),
        ),
        (Stop::Deconfigured, true, Some("Cease / PeerDeConfigured")),
    ];
    for (why, graceful, expected) in cases {
        let mut fsm = Fsm::new(peer());
        fsm.handle(Event::Start, Duration::ZERO);
        fsm.handle(Event::TcpConnectionConfirmed(local()), Duration::ZERO);
        fsm.handle(their_open(90, graceful), Duration::ZERO);
        fsm.handle(Event::Keepalive, Duration::ZERO);
        let actions = fsm.handle(Event::Stop(why), S);
        assert_eq!(sent_notification(&actions).as_deref(), expected, "{why:?}");
        assert_eq!(actions.last(), Some(&Action::Close));
        assert!(fsm.stopped() && fsm.state() == BgpState::Idle);
        assert_eq!(fsm.deadline(), None);
        assert!(
            fsm.handle(Event::Start, 2 * S).is_empty(),
            "stopped for good"
        );
    }
    // Stopped before connecting: nothing to say.
    let mut fsm = at(BgpState::Active);
    assert!(fsm.handle(Event::Stop(Stop::Shutdown), S).is_empty());
}

#[test]
fn bfd_down_takes_only_an_established_session_down() {
    for state in [BgpState::Connect, BgpState::OpenSent, BgpState::OpenConfirm] {
        let mut fsm = at(state);
        assert!(
            fsm.handle(Event::BfdDown("detect time".into()), S)
                .is_empty()
        );
        assert_eq!(fsm.state(), state);
    }
    let mut fsm = at(BgpState::Established);
    let actions = fsm.handle(
        Event::BfdDown("BFD session down: control detection time expired".into()),
        S,
    );
    assert_eq!(
        sent_notification(&actions).as_deref(),
        Some("Cease / BfdDown")
    );
    assert_eq!(fsm.state(), BgpState::Active);
}

#[test]
fn a_route_refresh_resends_its_family() {
    let mut fsm = at(BgpState::Established);
    assert_eq!(
        fsm.handle(Event::RouteRefresh(Some(Family::V4)), S),
        [Action::Resend(Family::V4)]
    );
    assert!(fsm.handle(Event::RouteRefresh(None), S).is_empty());
}
