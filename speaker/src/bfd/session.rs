//! One BFD session (RFC 5880 asynchronous mode, no echo; a peer's Demand
//! mode is honoured, this side never asks for it) as a
//! pure state machine: datagrams and ticks in, with the time as an input;
//! packets to send and state changes out. The socket loop only moves
//! datagrams and sleeps until [`Session::deadline`].

use std::time::Duration;

use super::packet::{self, AuthType, Diag, Malformed, Packet, State};

/// Time since an arbitrary start, as the socket loop measures it.
pub type Micros = u64;

/// Slowest transmission while not Up (section 6.8.3: at least one second).
pub const SLOW_TX: u32 = 1_000_000;

/// A keyed authentication setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Auth {
    /// Keyed MD5 or SHA1, plain or meticulous.
    pub kind: AuthType,
    /// The key ID sent and expected.
    pub key_id: u8,
    /// The key.
    pub key: Vec<u8>,
}

/// What the session is configured with (a BFDProfile, resolved).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// Desired Min TX Interval while Up, µs.
    pub desired_min_tx: u32,
    /// Required Min RX Interval, µs.
    pub required_min_rx: u32,
    /// Detect Mult.
    pub detect_mult: u8,
    /// Send nothing until the peer has sent something.
    pub passive: bool,
    /// Authentication, or none.
    pub auth: Option<Auth>,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            desired_min_tx: 300_000,
            required_min_rx: 300_000,
            detect_mult: 3,
            passive: false,
            auth: None,
        }
    }
}

/// What the session asks of its socket loop and its BGP session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this datagram to the peer.
    Send(Vec<u8>),
    /// The state changed; `diag` says why, `remote` is the state the peer
    /// last sent (a Down because the peer went AdminDown is no failure:
    /// RFC 5882 section 3.2).
    Changed {
        from: State,
        to: State,
        diag: Diag,
        remote: State,
    },
}

/// Why a datagram was dropped (counted, never acted on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// Failed the checks of section 6.8.6 that need no session.
    Malformed(Malformed),
    /// Your Discriminator is not ours (a stale or foreign session).
    Discriminator(u32),
    /// Authentication: missing, unexpected, wrong type or key ID, bad
    /// digest, sequence number out of window.
    Auth(String),
}

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dropped::Malformed(m) => write!(f, "malformed: {m}"),
            Dropped::Discriminator(d) => write!(f, "your discriminator {d} is not this session's"),
            Dropped::Auth(why) => write!(f, "authentication: {why}"),
        }
    }
}

/// Counters a session keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub received: u64,
    pub sent: u64,
    pub dropped: u64,
    pub auth_failures: u64,
    pub ups: u64,
    pub downs: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Poll {
    Idle,
    /// Polling since; the parameters to take on once the Final arrives.
    Sent(Params),
}

/// One session's variables (section 6.8.1) and timers.
#[derive(Clone, Debug)]
pub struct Session {
    params: Params,
    state: State,
    local_discr: u32,
    remote_discr: u32,
    remote_state: State,
    remote_min_rx: u32,
    remote_desired_tx: u32,
    remote_detect_mult: u8,
    /// The peer's Demand bit, as last received.
    remote_demand: bool,
    diag: Diag,
    poll: Poll,
    /// Send a Final in the next packet.
    final_due: bool,
    admin_down: bool,
    last_rx: Option<Micros>,
    next_tx: Micros,
    xmit_seq: u32,
    rcv_seq: Option<u32>,
    /// Whether the detection time since `last_rx` has been handled.
    expired: bool,
    rng: fastrand::Rng,
    /// Counters.
    pub counters: Counters,
    /// The last drop, for status.
    pub last_drop: Option<Dropped>,
}

impl Session {
    /// A session in state Down. `seed` drives the transmit jitter (and the
    /// first sequence number).
    pub fn new(params: Params, local_discr: u32, now: Micros, seed: u64) -> Session {
        let mut rng = fastrand::Rng::with_seed(seed);
        let xmit_seq = rng.u32(..);
        Session {
            params,
            state: State::Down,
            local_discr: local_discr.max(1),
            remote_discr: 0,
            remote_state: State::Down,
            remote_min_rx: 1,
            remote_desired_tx: 0,
            remote_detect_mult: 0,
            remote_demand: false,
            diag: Diag::None,
            poll: Poll::Idle,
            final_due: false,
            admin_down: false,
            last_rx: None,
            next_tx: now,
            xmit_seq,
            rcv_seq: None,
            expired: true,
            rng,
            counters: Counters::default(),
            last_drop: None,
        }
    }

    /// The session state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The local diagnostic.
    pub fn diag(&self) -> Diag {
        self.diag
    }

    /// This session's discriminator.
    pub fn local_discr(&self) -> u32 {
        self.local_discr
    }

    /// The peer's discriminator (0: not known).
    pub fn remote_discr(&self) -> u32 {
        self.remote_discr
    }

    /// The state the peer last sent.
    pub fn remote_state(&self) -> State {
        self.remote_state
    }

    /// Whether a Poll Sequence is running.
    pub fn polling(&self) -> bool {
        matches!(self.poll, Poll::Sent(_))
    }

    /// The configured parameters (those in force, or being polled for).
    pub fn params(&self) -> &Params {
        match &self.poll {
            Poll::Sent(next) => next,
            Poll::Idle => &self.params,
        }
    }

    fn desired_min_tx(&self) -> u32 {
        if self.state == State::Up {
            self.params.desired_min_tx
        } else {
            self.params.desired_min_tx.max(SLOW_TX)
        }
    }

    /// The interval between packets: the slower of what we want to send
    /// and what the peer wants to receive.
    pub fn tx_interval(&self) -> Duration {
        Duration::from_micros(u64::from(self.desired_min_tx().max(self.remote_min_rx)))
    }

    /// The detection time: the peer's multiplier times the slower of what we
    /// can receive and what it sends (section 6.8.4).
    pub fn detect_time(&self) -> Duration {
        Duration::from_micros(
            u64::from(self.remote_detect_mult)
                * u64::from(self.params.required_min_rx.max(self.remote_desired_tx)),
        )
    }

    fn detect_at(&self) -> Option<Micros> {
        if self.expired || self.remote_detect_mult == 0 {
            return None;
        }
        Some(self.last_rx? + self.detect_time().as_micros() as u64)
    }

    fn may_send(&self) -> bool {
        // Passive: nothing until the peer is heard; and never while the
        // peer asks for no packets (RemoteMinRxInterval 0).
        !(self.params.passive && self.remote_discr == 0) && self.remote_min_rx != 0
    }

    /// Whether the peer's Demand mode is active (section 6.6: its D bit, and
    /// both sides Up): this side then sends only Finals, state changes and
    /// its own Poll Sequences, no periodic packets.
    pub fn peer_demands(&self) -> bool {
        self.remote_demand && self.state == State::Up && self.remote_state == State::Up
    }

    fn may_send_periodically(&self) -> bool {
        // Section 6.8.7: not while the peer's Demand mode is active, unless
        // a Poll Sequence is being sent.
        self.may_send() && (self.polling() || !self.peer_demands())
    }

    /// When [`Session::tick`] must run next.
    pub fn deadline(&self) -> Micros {
        let mut at = if self.may_send_periodically() {
            self.next_tx
        } else {
            Micros::MAX
        };
        if let Some(detect) = self.detect_at() {
            at = at.min(detect);
        }
        at
    }

    fn schedule(&mut self, now: Micros) {
        // Section 6.8.7: 75-100 % of the interval, 75-90 % with a multiplier of 1.
        let interval = self.tx_interval().as_micros() as u64;
        let top = if self.params.detect_mult == 1 {
            90
        } else {
            100
        };
        let percent = self.rng.u64(75..=top);
        self.next_tx = now + interval * percent / 100;
    }

    fn packet(&mut self) -> Vec<u8> {
        let (poll, final_) = (
            matches!(self.poll, Poll::Sent(_)) && !self.final_due,
            self.final_due,
        );
        self.final_due = false;
        let state = if self.admin_down {
            State::AdminDown
        } else {
            self.state
        };
        let p = Packet {
            diag: self.diag,
            state,
            poll,
            final_,
            cpi: false,
            demand: false,
            detect_mult: self.params().detect_mult,
            my_discr: self.local_discr,
            your_discr: self.remote_discr,
            desired_min_tx: match &self.poll {
                Poll::Sent(next) if self.state == State::Up => next.desired_min_tx,
                _ => self.desired_min_tx(),
            },
            required_min_rx: self.params().required_min_rx,
            required_min_echo_rx: 0,
            auth: None,
        };
        let auth = self.params.auth.clone();
        let bytes = match &auth {
            Some(a) => {
                if a.kind.meticulous() || self.counters.sent.is_multiple_of(8) {
                    self.xmit_seq = self.xmit_seq.wrapping_add(1);
                }
                packet::encode(&p, Some((a.kind, a.key_id, &a.key, self.xmit_seq)))
            }
            None => packet::encode(&p, None),
        };
        self.counters.sent += 1;
        bytes
    }

    fn send_now(&mut self, now: Micros, out: &mut Vec<Action>) {
        if self.may_send() {
            let bytes = self.packet();
            out.push(Action::Send(bytes));
            self.schedule(now);
        }
    }

    fn go(&mut self, to: State, diag: Diag, out: &mut Vec<Action>) {
        if self.state == to {
            return;
        }
        let from = self.state;
        self.state = to;
        self.diag = diag;
        match to {
            State::Up => {
                self.counters.ups += 1;
                // Up: the fast interval replaces the slow one of the
                // handshake, a change the peer is polled for (section 6.8.3).
                if self.params.desired_min_tx < SLOW_TX && self.poll == Poll::Idle {
                    self.poll = Poll::Sent(self.params.clone());
                }
            }
            State::Down if from == State::Up => self.counters.downs += 1,
            _ => {}
        }
        out.push(Action::Changed {
            from,
            to,
            diag,
            remote: self.remote_state,
        });
    }

    /// Timers: the detection time running out, and the next packet.
    pub fn tick(&mut self, now: Micros) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(at) = self.detect_at()
            && now >= at
        {
            self.expired = true;
            // Section 6.8.1: the peer's discriminator and sequence are
            // forgotten once it has been silent a detection time.
            self.remote_discr = 0;
            self.rcv_seq = None;
            self.remote_detect_mult = 0;
            if matches!(self.state, State::Init | State::Up) {
                self.go(State::Down, Diag::DetectExpired, &mut out);
                // A parameter change in flight is taken on at once.
                if let Poll::Sent(next) = std::mem::replace(&mut self.poll, Poll::Idle) {
                    self.params = next;
                }
                self.send_now(now, &mut out);
            }
        }
        if self.may_send_periodically() && now >= self.next_tx {
            self.send_now(now, &mut out);
        }
        out
    }

    /// Holds the session down (an operator's choice, or the speaker
    /// stopping): the peer is told AdminDown, which it must not take for a
    /// failure (RFC 5882).
    pub fn admin_down(&mut self, now: Micros) -> Vec<Action> {
        let mut out = Vec::new();
        self.admin_down = true;
        self.go(State::AdminDown, Diag::AdminDown, &mut out);
        self.send_now(now, &mut out);
        out
    }

    /// Changes the parameters. While Up the peer is polled and the change
    /// is taken on when it answers with a Final (section 6.8.3); otherwise at
    /// once.
    pub fn configure(&mut self, params: Params, now: Micros) -> Vec<Action> {
        let mut out = Vec::new();
        if params == *self.params() {
            return out;
        }
        let timing = |p: &Params| (p.desired_min_tx, p.required_min_rx, p.detect_mult);
        if self.state == State::Up && timing(&params) != timing(&self.params) {
            // Authentication and passive mode change at once; the timers
            // wait for the Final.
            self.params.auth = params.auth.clone();
            self.params.passive = params.passive;
            self.poll = Poll::Sent(params);
            self.send_now(now, &mut out);
        } else {
            self.params = params;
            self.poll = Poll::Idle;
        }
        out
    }

    /// A datagram from the peer.
    pub fn receive(&mut self, datagram: &[u8], now: Micros) -> Result<Vec<Action>, Dropped> {
        let result = self.accept(datagram);
        match result {
            Err(why) => {
                self.counters.dropped += 1;
                if matches!(why, Dropped::Auth(_)) {
                    self.counters.auth_failures += 1;
                }
                self.last_drop = Some(why.clone());
                Err(why)
            }
            Ok(p) => {
                self.counters.received += 1;
                Ok(self.act(p, now))
            }
        }
    }

    /// Every check before the packet may change anything.
    fn accept(&mut self, datagram: &[u8]) -> Result<Packet, Dropped> {
        let p = packet::parse(datagram).map_err(Dropped::Malformed)?;
        if p.your_discr != 0 && p.your_discr != self.local_discr {
            return Err(Dropped::Discriminator(p.your_discr));
        }
        match (&self.params.auth, &p.auth) {
            (None, None) => {}
            (None, Some(a)) => {
                return Err(Dropped::Auth(format!(
                    "the peer sends {} but this session has no key",
                    a.kind
                )));
            }
            (Some(ours), None) => {
                return Err(Dropped::Auth(format!(
                    "the peer sends no authentication; this session expects {}",
                    ours.kind
                )));
            }
            (Some(ours), Some(theirs)) => {
                if ours.kind != theirs.kind {
                    return Err(Dropped::Auth(format!(
                        "the peer sends {}; this session expects {}",
                        theirs.kind, ours.kind
                    )));
                }
                if ours.key_id != theirs.key_id {
                    return Err(Dropped::Auth(format!(
                        "key ID {} from the peer; this session's is {}",
                        theirs.key_id, ours.key_id
                    )));
                }
                if !packet::verify(datagram, ours.kind, &ours.key) {
                    return Err(Dropped::Auth("digest mismatch: the keys differ".into()));
                }
                // Section 6.7.3/6.7.4: within 3 × Detect Mult of the last
                // one; meticulous must also grow.
                if let Some(last) = self.rcv_seq {
                    let ahead = theirs.sequence.wrapping_sub(last);
                    let window = 3 * u32::from(p.detect_mult);
                    let floor = u32::from(ours.kind.meticulous());
                    if ahead < floor || ahead > window {
                        return Err(Dropped::Auth(format!(
                            "sequence number {} out of window after {last} (replayed or stale)",
                            theirs.sequence
                        )));
                    }
                }
                self.rcv_seq = Some(theirs.sequence);
            }
        }
        Ok(p)
    }

    /// Section 6.8.6 from "set bfd.RemoteDiscr" on.
    fn act(&mut self, p: Packet, now: Micros) -> Vec<Action> {
        let mut out = Vec::new();
        let was_quiet = self.remote_discr == 0;
        self.remote_discr = p.my_discr;
        self.remote_state = p.state;
        let rx_changed = p.required_min_rx != self.remote_min_rx;
        self.remote_min_rx = p.required_min_rx;
        self.remote_desired_tx = p.desired_min_tx;
        self.remote_detect_mult = p.detect_mult;
        self.remote_demand = p.demand;
        self.last_rx = Some(now);
        self.expired = false;
        if p.final_
            && let Poll::Sent(next) = std::mem::replace(&mut self.poll, Poll::Idle)
        {
            self.params = next;
        }
        if p.poll {
            self.final_due = true;
        }
        if self.admin_down {
            if self.final_due {
                self.send_now(now, &mut out);
            }
            return out;
        }
        match (self.state, p.state) {
            (State::Up | State::Init, State::AdminDown) => {
                self.go(State::Down, Diag::NeighborDown, &mut out);
            }
            (_, State::AdminDown) => {}
            (State::Down, State::Down) => self.go(State::Init, Diag::None, &mut out),
            (State::Down, State::Init) | (State::Init, State::Init | State::Up) => {
                self.go(State::Up, Diag::None, &mut out);
            }
            (State::Up, State::Down) => self.go(State::Down, Diag::NeighborDown, &mut out),
            _ => {}
        }
        // Answer at once: a Final, a state change, a peer just heard (so a
        // passive side starts). Otherwise a peer wanting another interval
        // has the next packet follow it.
        let changed = out.iter().any(|a| matches!(a, Action::Changed { .. }));
        if self.final_due || changed || was_quiet {
            self.send_now(now, &mut out);
        } else if rx_changed {
            self.schedule(now);
        }
        out
    }
}

#[cfg(test)]
mod tests;
