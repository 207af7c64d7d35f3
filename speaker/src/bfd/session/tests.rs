//! Replays of two sessions on a simulated link (a virtual clock, packets
//! delivered after a delay or lost), and of single events.

use super::*;

const MS: Micros = 1_000;

/// Two sessions facing each other across a link.
struct Link {
    a: Session,
    b: Session,
    now: Micros,
    /// One-way delay.
    delay: Micros,
    /// In flight: (arrival, to b?, bytes).
    flight: Vec<(Micros, bool, Vec<u8>)>,
    /// Whether each direction delivers (a→b, b→a).
    up: (bool, bool),
    /// Every state change seen: (time, side, action).
    log: Vec<(Micros, char, Action)>,
    /// Packets dropped by a receiver, with why.
    drops: Vec<(char, Dropped)>,
}

impl Link {
    fn new(a: Params, b: Params) -> Link {
        Link {
            a: Session::new(a, 0x0a, 0, 1),
            b: Session::new(b, 0x0b, 0, 2),
            now: 0,
            delay: MS,
            flight: Vec::new(),
            up: (true, true),
            log: Vec::new(),
            drops: Vec::new(),
        }
    }

    fn take(&mut self, side: char, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send(bytes) => {
                    let to_b = side == 'a';
                    if (to_b && self.up.0) || (!to_b && self.up.1) {
                        self.flight.push((self.now + self.delay, to_b, bytes));
                    }
                }
                changed => self.log.push((self.now, side, changed)),
            }
        }
    }

    /// Runs until `until`, every timer and delivery in order.
    fn run(&mut self, until: Micros) {
        loop {
            let arrival = self.flight.iter().map(|f| f.0).min().unwrap_or(Micros::MAX);
            let next = self.a.deadline().min(self.b.deadline()).min(arrival);
            if next > until {
                self.now = until;
                return;
            }
            self.now = next.max(self.now);
            if let Some(i) = self.flight.iter().position(|f| f.0 <= self.now) {
                let (_, to_b, bytes) = self.flight.remove(i);
                let (side, session) = if to_b {
                    ('b', &mut self.b)
                } else {
                    ('a', &mut self.a)
                };
                match session.receive(&bytes, self.now) {
                    Ok(actions) => self.take(side, actions),
                    Err(why) => self.drops.push((side, why)),
                }
                continue;
            }
            let now = self.now;
            let actions = self.a.tick(now);
            self.take('a', actions);
            let actions = self.b.tick(now);
            self.take('b', actions);
        }
    }

    fn changes(&self, side: char) -> Vec<(State, Diag)> {
        self.log
            .iter()
            .filter(|(_, s, _)| *s == side)
            .filter_map(|(_, _, a)| match a {
                Action::Changed { to, diag, .. } => Some((*to, *diag)),
                Action::Send(_) => None,
            })
            .collect()
    }

    fn went(&self, side: char, to: State) -> Option<Micros> {
        self.log.iter().find_map(|(at, s, a)| match a {
            Action::Changed { to: t, .. } if *s == side && *t == to => Some(*at),
            _ => None,
        })
    }
}

fn fast(ms: u32, mult: u8) -> Params {
    Params {
        desired_min_tx: ms * 1000,
        required_min_rx: ms * 1000,
        detect_mult: mult,
        ..Params::default()
    }
}

#[test]
fn two_sessions_come_up_through_init_and_poll_down_to_their_fast_interval() {
    let mut link = Link::new(fast(100, 3), fast(300, 3));
    link.run(5_000 * MS);
    assert_eq!(link.a.state(), State::Up);
    assert_eq!(link.b.state(), State::Up);
    // The three-way handshake: one side passes through Init.
    let a = link.changes('a');
    let b = link.changes('b');
    assert!(
        a == [(State::Init, Diag::None), (State::Up, Diag::None)]
            || b == [(State::Init, Diag::None), (State::Up, Diag::None)],
        "{a:?} {b:?}"
    );
    // Up within the first slow packet or two (1 s apart, with jitter).
    assert!(link.went('a', State::Up).expect("a up") < 2_100 * MS);
    // The poll after Up finished on both sides, and the slower side wins:
    // a sends every 300 ms (b wants no faster), b every 300 ms.
    assert!(!link.a.polling() && !link.b.polling());
    assert_eq!(link.a.tx_interval(), Duration::from_millis(300));
    assert_eq!(link.b.tx_interval(), Duration::from_millis(300));
    // a detects b's silence after 3 × max(100 ms wanted, 300 ms sent).
    assert_eq!(link.a.detect_time(), Duration::from_millis(900));
    assert_eq!(link.b.detect_time(), Duration::from_millis(900));
    assert!(link.drops.is_empty(), "{:?}", link.drops);
}

#[test]
fn a_silent_peer_is_down_after_the_detection_time_and_forgotten() {
    let mut link = Link::new(fast(100, 3), fast(100, 3));
    link.run(5_000 * MS);
    assert_eq!(link.a.state(), State::Up);
    // b's packets stop reaching a (a link cut on b's side).
    link.up.1 = false;
    let cut = link.now;
    link.run(cut + 2_000 * MS);
    let down = link.went('a', State::Down).expect("a went down");
    let took = down - cut;
    // 3 × 100 ms after the last packet heard, which was at most one
    // interval before the cut.
    assert!(
        (200 * MS..=300 * MS + 1).contains(&took),
        "detected after {took} µs"
    );
    assert_eq!(link.a.diag(), Diag::DetectExpired);
    assert_eq!(
        link.a.remote_discr(),
        0,
        "the peer's discriminator is forgotten"
    );
    assert_eq!(link.a.counters.downs, 1);
    // Down, a sends slowly again (1 s), never faster.
    assert_eq!(link.a.tx_interval(), Duration::from_secs(1));
    // b, hearing a say Down, goes Down too (neighbor signaled), then Init
    // as a's Down packets keep coming: b still hears a.
    let b = link.changes('b');
    let at = b
        .iter()
        .position(|c| *c == (State::Down, Diag::NeighborDown))
        .expect("b went down");
    assert_eq!(b[at + 1..], [(State::Init, Diag::None)]);
    // The link heals: both come back up.
    link.up.1 = true;
    link.run(link.now + 5_000 * MS);
    assert_eq!((link.a.state(), link.b.state()), (State::Up, State::Up));
}

#[test]
fn a_peer_going_admin_down_is_not_a_failure() {
    let mut link = Link::new(fast(100, 3), fast(100, 3));
    link.run(5_000 * MS);
    let actions = link.b.admin_down(link.now);
    link.take('b', actions);
    link.run(link.now + 100 * MS);
    let last = link
        .log
        .iter()
        .rev()
        .find(|(_, side, _)| *side == 'a')
        .map(|(_, _, a)| a.clone());
    assert_eq!(
        last,
        Some(Action::Changed {
            from: State::Up,
            to: State::Down,
            diag: Diag::NeighborDown,
            remote: State::AdminDown,
        })
    );
    // An AdminDown side stays there whatever it hears, and keeps telling.
    link.run(link.now + 3_000 * MS);
    assert_eq!(link.b.state(), State::AdminDown);
    assert_eq!(link.a.state(), State::Down);
    assert_eq!(link.a.remote_state(), State::AdminDown);
}

#[test]
fn a_parameter_change_mid_session_is_polled_and_taken_on_at_the_final() {
    let mut link = Link::new(fast(100, 3), fast(100, 3));
    link.run(5_000 * MS);
    assert_eq!(link.a.tx_interval(), Duration::from_millis(100));
    // a slows down: its interval stays until b answers the poll.
    let actions = link.a.configure(fast(500, 5), link.now);
    assert!(link.a.polling());
    assert_eq!(link.a.tx_interval(), Duration::from_millis(100));
    assert!(matches!(actions.as_slice(), [Action::Send(_)]));
    let sent = match &actions[0] {
        Action::Send(bytes) => packet::parse(bytes).expect("parses"),
        other => panic!("{other:?}"),
    };
    assert!(sent.poll && !sent.final_);
    assert_eq!((sent.desired_min_tx, sent.detect_mult), (500_000, 5));
    link.take('a', actions);
    link.run(link.now + 50 * MS);
    assert!(!link.a.polling(), "b answered with a Final");
    assert_eq!(link.a.tx_interval(), Duration::from_millis(500));
    // b now detects a's silence after 5 × 500 ms; nobody went down.
    link.run(link.now + 3_000 * MS);
    assert_eq!(link.b.detect_time(), Duration::from_millis(2_500));
    assert_eq!((link.a.state(), link.b.state()), (State::Up, State::Up));
    assert_eq!(link.a.counters.downs + link.b.counters.downs, 0);
}

#[test]
fn packets_for_a_stale_discriminator_are_dropped_and_counted() {
    let mut a = Session::new(fast(100, 3), 0x0a, 0, 1);
    let stale = Packet {
        diag: Diag::None,
        state: State::Up,
        poll: false,
        final_: false,
        cpi: false,
        demand: false,
        detect_mult: 3,
        my_discr: 0x77,
        your_discr: 0x09,
        desired_min_tx: 100_000,
        required_min_rx: 100_000,
        required_min_echo_rx: 0,
        auth: None,
    };
    let result = a.receive(&packet::encode(&stale, None), 5);
    assert_eq!(result, Err(Dropped::Discriminator(9)));
    assert_eq!(a.state(), State::Down);
    assert_eq!((a.counters.dropped, a.counters.received), (1, 0));
    // Garbage too: counted, nothing else.
    assert!(matches!(
        a.receive(&[0x20, 0, 0], 6),
        Err(Dropped::Malformed(Malformed::Truncated))
    ));
    assert_eq!(a.counters.dropped, 2);
    assert_eq!(a.remote_discr(), 0);
}

fn keyed(kind: AuthType, key: &[u8]) -> Params {
    Params {
        auth: Some(Auth {
            kind,
            key_id: 1,
            key: key.to_vec(),
        }),
        ..fast(100, 3)
    }
}

#[test]
fn authenticated_sessions_come_up_only_with_the_same_key() {
    for kind in [
        AuthType::MeticulousKeyedSha1,
        AuthType::KeyedSha1,
        AuthType::KeyedMd5,
    ] {
        let mut link = Link::new(keyed(kind, b"one"), keyed(kind, b"one"));
        link.run(5_000 * MS);
        assert_eq!(
            (link.a.state(), link.b.state()),
            (State::Up, State::Up),
            "{kind}"
        );
        assert!(link.drops.is_empty(), "{kind}: {:?}", link.drops);

        let mut link = Link::new(keyed(kind, b"one"), keyed(kind, b"two"));
        link.run(5_000 * MS);
        assert_eq!((link.a.state(), link.b.state()), (State::Down, State::Down));
        assert!(link.a.counters.auth_failures > 0);
        assert_eq!(
            link.a.last_drop,
            Some(Dropped::Auth("digest mismatch: the keys differ".into()))
        );
    }
    // One side without a key.
    let mut link = Link::new(keyed(AuthType::KeyedSha1, b"one"), fast(100, 3));
    link.run(3_000 * MS);
    assert_eq!(link.a.state(), State::Down);
    assert!(matches!(&link.b.last_drop, Some(Dropped::Auth(why)) if why.contains("no key")));
}

#[test]
fn a_replayed_meticulous_packet_is_dropped_and_a_keyed_one_within_the_window_is_not() {
    for (kind, replay_accepted) in [
        (AuthType::MeticulousKeyedSha1, false),
        (AuthType::KeyedSha1, true),
    ] {
        let mut sender = Session::new(keyed(kind, b"k"), 0x0a, 0, 1);
        let mut receiver = Session::new(keyed(kind, b"k"), 0x0b, 0, 2);
        let first = match sender.tick(0).pop() {
            Some(Action::Send(bytes)) => bytes,
            other => panic!("{other:?}"),
        };
        assert!(receiver.receive(&first, 10).is_ok());
        let again = receiver.receive(&first, 20);
        assert_eq!(again.is_ok(), replay_accepted, "{kind}: {again:?}");
        // Far ahead of the window: dropped for both.
        let mut jumped = first.clone();
        let seq = u32::from_be_bytes([jumped[28], jumped[29], jumped[30], jumped[31]]);
        jumped[28..32].copy_from_slice(&(seq + 100).to_be_bytes());
        let result = receiver.receive(&jumped, 30);
        assert!(
            matches!(result, Err(Dropped::Auth(_))),
            "{kind}: {result:?}"
        );
    }
}

#[test]
fn a_passive_session_sends_nothing_until_it_hears_the_peer() {
    let passive = Params {
        passive: true,
        ..fast(100, 3)
    };
    let mut quiet = Session::new(passive.clone(), 0x0a, 0, 1);
    assert!(quiet.tick(0).is_empty());
    assert_eq!(quiet.deadline(), Micros::MAX);
    let mut link = Link::new(passive, fast(100, 3));
    link.run(5_000 * MS);
    assert_eq!((link.a.state(), link.b.state()), (State::Up, State::Up));
    // Two passive sides never start.
    let mut link = Link::new(
        Params {
            passive: true,
            ..fast(100, 3)
        },
        Params {
            passive: true,
            ..fast(100, 3)
        },
    );
    link.run(5_000 * MS);
    assert_eq!((link.a.state(), link.b.state()), (State::Down, State::Down));
}

#[test]
fn a_peer_that_restarts_is_seen_down_and_comes_back() {
    let mut link = Link::new(fast(100, 3), fast(100, 3));
    link.run(5_000 * MS);
    // b restarts: a new session, a new discriminator, state Down.
    link.b = Session::new(fast(100, 3), 0x0c, link.now, 3);
    link.flight.clear();
    link.run(link.now + 5_000 * MS);
    let a = link.changes('a');
    assert!(
        a.contains(&(State::Down, Diag::NeighborDown))
            || a.contains(&(State::Down, Diag::DetectExpired)),
        "{a:?}"
    );
    assert_eq!((link.a.state(), link.b.state()), (State::Up, State::Up));
    assert_eq!(link.a.remote_discr(), 0x0c);
}

#[test]
fn transmit_jitter_stays_within_75_to_100_percent() {
    let mut s = Session::new(fast(100, 3), 1, 0, 7);
    // Pretend the peer is heard and Up so the fast interval applies.
    let mut last = 0;
    let mut gaps = Vec::new();
    for _ in 0..200 {
        let at = s.deadline();
        s.tick(at);
        gaps.push(s.deadline() - at);
        last = at;
    }
    assert!(last > 0);
    // Down: 1 s interval, so 750 ms to 1 s between packets.
    assert!(
        gaps.iter().all(|g| (750 * MS..=1_000 * MS).contains(g)),
        "{gaps:?}"
    );
    assert!(gaps.iter().min() != gaps.iter().max(), "jittered");
}

/// A packet from a scripted peer (discriminator 0x0b) to `a`.
fn from_peer(a: &Session, state: State, demand: bool, poll: bool, final_: bool) -> Vec<u8> {
    packet::encode(
        &Packet {
            diag: Diag::None,
            state,
            poll,
            final_,
            cpi: false,
            demand,
            detect_mult: 3,
            my_discr: 0x0b,
            your_discr: if state == State::Down {
                0
            } else {
                a.local_discr()
            },
            desired_min_tx: 100_000,
            required_min_rx: 100_000,
            required_min_echo_rx: 0,
            auth: None,
        },
        None,
    )
}

/// The packets among `actions`, parsed.
fn sent(actions: &[Action]) -> Vec<Packet> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(bytes) => Some(packet::parse(bytes).expect("parses")),
            Action::Changed { .. } => None,
        })
        .collect()
}

/// Runs `a`'s timers from `from` to `to` in 10 ms steps, the peer sending
/// an Up packet (with `demand`) every 100 ms; what `a` sent meanwhile.
fn replay(a: &mut Session, from: Micros, to: Micros, demand: bool) -> Vec<Packet> {
    let mut out = Vec::new();
    let mut now = from;
    while now < to {
        if (now - from).is_multiple_of(100 * MS) {
            let bytes = from_peer(a, State::Up, demand, false, false);
            out.extend(sent(&a.receive(&bytes, now).expect("accepted")));
        }
        out.extend(sent(&a.tick(now)));
        now += 10 * MS;
    }
    out
}

#[test]
fn a_peer_in_demand_mode_gets_no_periodic_packets_but_finals_and_polls() {
    let mut a = Session::new(fast(100, 3), 0x0a, 0, 7);
    a.receive(&from_peer(&a, State::Down, false, false, false), 0)
        .unwrap();
    a.receive(&from_peer(&a, State::Up, false, false, false), MS)
        .unwrap();
    assert_eq!(a.state(), State::Up);
    // Up, it polls for its fast interval; the peer's Final ends that.
    assert!(a.polling());
    a.receive(&from_peer(&a, State::Up, false, false, true), 2 * MS)
        .unwrap();
    assert!(!a.polling());
    // Without Demand: periodic packets, ~10 a second at 100 ms.
    let before = replay(&mut a, 10 * MS, 1_010 * MS, false);
    assert!(before.len() >= 9, "{}", before.len());
    assert!(!a.peer_demands());
    // The peer sets D: nothing periodic any more, and the session stays Up
    // on the peer's own packets.
    let quiet = replay(&mut a, 1_010 * MS, 3_010 * MS, true);
    assert!(a.peer_demands());
    assert!(quiet.iter().all(|p| p.poll || p.final_), "{quiet:?}");
    assert!(quiet.len() <= 1, "at most the one already due: {quiet:?}");
    assert_eq!(a.state(), State::Up);
    // A Poll from the peer (it checks the path) is answered at once.
    let answer = sent(
        &a.receive(&from_peer(&a, State::Up, true, true, false), 3_010 * MS)
            .unwrap(),
    );
    assert!(matches!(answer.as_slice(), [p] if p.final_), "{answer:?}");
    // A parameter change of ours is polled for, periodically, until the Final.
    let first = sent(&a.configure(fast(300, 3), 3_020 * MS));
    assert!(matches!(first.as_slice(), [p] if p.poll), "{first:?}");
    let polls = replay(&mut a, 3_020 * MS, 3_520 * MS, true)
        .iter()
        .filter(|p| p.poll)
        .count();
    assert!(polls >= 3, "polls repeat until answered: {polls}");
    // The peer's Final ends the sequence: quiet again.
    a.receive(&from_peer(&a, State::Up, true, false, true), 3_520 * MS)
        .unwrap();
    assert!(!a.polling());
    let quiet_again = replay(&mut a, 3_530 * MS, 5_530 * MS, true);
    assert!(quiet_again.is_empty(), "{quiet_again:?}");
    // D cleared: periodic packets again (now at 300 ms).
    let resumed = replay(&mut a, 5_530 * MS, 7_530 * MS, false);
    assert!(resumed.len() >= 5, "{}", resumed.len());
    assert!(!a.peer_demands());
}
