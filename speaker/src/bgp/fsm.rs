//! The BGP finite state machine (RFC 4271 section 8) of one session, pure:
//! events in (with the time since the session started), actions out, timers
//! as deadlines. The session task only moves bytes and sleeps.
//!
//! The speaker only opens connections itself (it never listens on port 179),
//! so a connection collision (section 6.8, event 23) cannot arise, and the
//! optional session attributes (DelayOpen, passive TCP, damping) are off.
//! Where the RFC would retry at once from Connect, this waits a back-off in
//! Active first (doubling from 1 s up to the connect retry time, reset once
//! Established), so a peer that refuses connections is not hammered.

use std::time::Duration;

use ferrolb_api::nodeannouncement::BgpState;
use netgauze_bgp_pkt::notification::{
    BgpNotificationMessage, CeaseError, FiniteStateMachineError, HoldTimerExpiredError,
};
use netgauze_bgp_pkt::open::BgpOpenMessage;

use super::config::Peer;
use super::message::{self, Family, Local, Negotiated};

/// Why a session ends (the FSM decides what each stop sends).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Removed from the NodeAnnouncement: Cease / Peer De-configured.
    Deconfigured,
    /// The speaker stops: Cease / Administrative Shutdown, or with graceful
    /// restart negotiated, a silent close so the peer keeps the routes.
    Shutdown,
}

/// How long to wait for the peer's OPEN (RFC 4271 suggests 4 minutes).
pub const OPEN_HOLD: Duration = Duration::from_secs(240);
/// The first wait after a failure; doubled up to the session's connect time.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// RFC 4271 events (their section 8.1 numbers in the comments), as this
/// speaker meets them.
#[derive(Clone, Debug)]
pub enum Event {
    /// ManualStart (1).
    Start,
    /// ManualStop (2), and why.
    Stop(Stop),
    /// ConnectRetryTimer_Expires (9): connect again, or give up waiting for
    /// the TCP connection.
    ConnectRetryTimerExpires,
    /// HoldTimer_Expires (10).
    HoldTimerExpires,
    /// KeepaliveTimer_Expires (11).
    KeepaliveTimerExpires,
    /// TcpConnectionConfirmed (17), with what the OPEN says of us.
    TcpConnectionConfirmed(Local),
    /// TcpConnectionFails (18): refused, reset, closed by the peer, or the
    /// password lookup before it.
    TcpConnectionFails(String),
    /// BGPOpen (19); a refusal is BGPOpenMsgErr (22).
    Open(Box<BgpOpenMessage>),
    /// BGPHeaderErr / BGPOpenMsgErr / UpdateMsgErr (21, 22, 28): a message
    /// that cannot be read, with the NOTIFICATION it calls for.
    Malformed(Option<BgpNotificationMessage>, String),
    /// NotifMsg (25).
    Notification(BgpNotificationMessage),
    /// KeepAliveMsg (26).
    Keepalive,
    /// UpdateMsg (27) (received routes are ignored).
    Update,
    /// A ROUTE-REFRESH (RFC 2918) for a family.
    RouteRefresh(Option<Family>),
    /// BFD says the path is down (RFC 5882).
    BfdDown(String),
}

/// What the session task must do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Open the TCP connection (looking the password up first).
    Connect,
    /// Send our OPEN.
    SendOpen(Local),
    /// Send a KEEPALIVE.
    SendKeepalive,
    /// Send a NOTIFICATION (best effort).
    SendNotification(BgpNotificationMessage),
    /// Drop the TCP connection.
    Close,
    /// Established: send every route and the End-of-RIB markers.
    Established(Negotiated),
    /// Send the routes of a family again (route refresh).
    Resend(Family),
}

/// One session's state and timers.
#[derive(Clone, Debug)]
pub struct Fsm {
    peer: Peer,
    state: BgpState,
    local: Option<Local>,
    negotiated: Option<Negotiated>,
    backoff: Duration,
    connect_retry_at: Option<Duration>,
    hold_at: Option<Duration>,
    keepalive_at: Option<Duration>,
    last_error: Option<String>,
    stopped: bool,
}

fn fsm_error(state: BgpState) -> BgpNotificationMessage {
    let value = Box::new([]);
    BgpNotificationMessage::FiniteStateMachineError(match state {
        BgpState::OpenSent => {
            FiniteStateMachineError::ReceiveUnexpectedMessageInOpenSentState { value }
        }
        BgpState::OpenConfirm => {
            FiniteStateMachineError::ReceiveUnexpectedMessageInOpenConfirmState { value }
        }
        _ => FiniteStateMachineError::ReceiveUnexpectedMessageInEstablishedState { value },
    })
}

fn hold_expired() -> BgpNotificationMessage {
    BgpNotificationMessage::HoldTimerExpiredError(HoldTimerExpiredError::Unspecific {
        sub_code: 0,
        value: Box::new([]),
    })
}

impl Fsm {
    /// A session in Idle.
    pub fn new(peer: Peer) -> Fsm {
        Fsm {
            peer,
            state: BgpState::Idle,
            local: None,
            negotiated: None,
            backoff: FIRST_BACKOFF,
            connect_retry_at: None,
            hold_at: None,
            keepalive_at: None,
            last_error: None,
            stopped: false,
        }
    }

    /// The RFC 4271 state.
    pub fn state(&self) -> BgpState {
        self.state
    }

    /// The last failure, for people.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Whether a ManualStop ended the session for good.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// What was negotiated, while OpenConfirm or Established.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// When [`Fsm::tick`] must run next, if any timer runs.
    pub fn deadline(&self) -> Option<Duration> {
        [self.connect_retry_at, self.hold_at, self.keepalive_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// The timer events due at `now`, earliest first.
    pub fn tick(&mut self, now: Duration) -> Vec<Action> {
        let due = |at: Option<Duration>| at.is_some_and(|at| at <= now);
        let mut actions = Vec::new();
        if due(self.connect_retry_at) {
            actions.extend(self.handle(Event::ConnectRetryTimerExpires, now));
        }
        if due(self.hold_at) {
            actions.extend(self.handle(Event::HoldTimerExpires, now));
        }
        if due(self.keepalive_at) {
            actions.extend(self.handle(Event::KeepaliveTimerExpires, now));
        }
        actions
    }

    fn connected(&self) -> bool {
        matches!(
            self.state,
            BgpState::OpenSent | BgpState::OpenConfirm | BgpState::Established
        )
    }

    fn connect_timeout(&self) -> Duration {
        self.peer
            .connect_retry
            .clamp(Duration::from_secs(3), Duration::from_secs(30))
    }

    /// Any failure: close, say why, wait a back-off in Active. A failure
    /// after Established starts the back-off from the beginning.
    fn fail(&mut self, why: String, now: Duration, actions: &mut Vec<Action>) {
        if self.state == BgpState::Established {
            self.backoff = FIRST_BACKOFF;
        }
        if self.connected() {
            actions.push(Action::Close);
        }
        self.last_error = Some(why);
        self.state = BgpState::Active;
        self.negotiated = None;
        self.hold_at = None;
        self.keepalive_at = None;
        self.connect_retry_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(self.peer.connect_retry.max(FIRST_BACKOFF));
    }

    /// Sends `notification`, then fails with why.
    fn refuse(
        &mut self,
        notification: BgpNotificationMessage,
        why: String,
        now: Duration,
        actions: &mut Vec<Action>,
    ) {
        let text = message::describe(&notification);
        actions.push(Action::SendNotification(notification));
        self.fail(format!("sent NOTIFICATION {text}: {why}"), now, actions);
    }

    fn keepalive_timer(&mut self, now: Duration) {
        self.keepalive_at = self
            .negotiated
            .as_ref()
            .and_then(|n| n.keepalive)
            .map(|every| now + every);
    }

    fn hold_timer(&mut self, now: Duration) {
        self.hold_at = self
            .negotiated
            .as_ref()
            .map(|n| n.hold_time)
            .filter(|h| !h.is_zero())
            .map(|h| now + h);
    }

    /// One event.
    pub fn handle(&mut self, event: Event, now: Duration) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.stopped {
            return actions;
        }
        match (self.state, event) {
            (_, Event::Stop(why)) => {
                if self.connected() {
                    let graceful = self.state == BgpState::Established
                        && self.peer.graceful_restart
                        && self
                            .negotiated
                            .as_ref()
                            .is_some_and(|n| n.peer_graceful_restart);
                    let value = Box::new([]);
                    let cease = match why {
                        // With graceful restart the peer keeps our routes
                        // as stale until we are back: close silently.
                        Stop::Shutdown if graceful => None,
                        Stop::Shutdown => Some(CeaseError::AdministrativeShutdown { value }),
                        Stop::Deconfigured => Some(CeaseError::PeerDeConfigured { value }),
                    };
                    if let Some(cease) = cease {
                        actions.push(Action::SendNotification(
                            BgpNotificationMessage::CeaseError(cease),
                        ));
                    }
                    actions.push(Action::Close);
                }
                self.stopped = true;
                self.state = BgpState::Idle;
                self.connect_retry_at = None;
                self.hold_at = None;
                self.keepalive_at = None;
            }
            (BgpState::Idle, Event::Start)
            | (BgpState::Active, Event::ConnectRetryTimerExpires) => {
                self.state = BgpState::Connect;
                self.connect_retry_at = Some(now + self.connect_timeout());
                actions.push(Action::Connect);
            }
            (BgpState::Connect, Event::ConnectRetryTimerExpires) => {
                let hint = if self.peer.password.is_some() {
                    " (a TCP-MD5 password the peer does not share looks exactly like this)"
                } else {
                    " (if the peer requires a TCP-MD5 password, set passwordSecretRef)"
                };
                actions.push(Action::Close);
                let why = format!(
                    "no answer from {}:{} within {}s{hint}",
                    self.peer.address,
                    self.peer.port,
                    self.connect_timeout().as_secs()
                );
                self.fail(why, now, &mut actions);
            }
            (BgpState::Connect, Event::TcpConnectionConfirmed(local)) => {
                self.connect_retry_at = None;
                self.state = BgpState::OpenSent;
                self.hold_at = Some(now + OPEN_HOLD);
                actions.push(Action::SendOpen(local.clone()));
                self.local = Some(local);
            }
            (BgpState::OpenSent, Event::Open(open)) => {
                let Some(local) = self.local.clone() else {
                    self.fail(
                        "OPEN before the connection was set up".into(),
                        now,
                        &mut actions,
                    );
                    return actions;
                };
                match message::check_open(&self.peer, &local, self.peer.keepalive, &open) {
                    Ok(negotiated) => {
                        actions.push(Action::SendKeepalive);
                        self.state = BgpState::OpenConfirm;
                        self.negotiated = Some(negotiated);
                        self.keepalive_timer(now);
                        self.hold_at = Some(
                            now + self
                                .negotiated
                                .as_ref()
                                .map(|n| n.hold_time)
                                .filter(|h| !h.is_zero())
                                .unwrap_or(OPEN_HOLD),
                        );
                    }
                    Err((notification, why)) => {
                        self.refuse(notification, why, now, &mut actions);
                    }
                }
            }
            (BgpState::OpenConfirm, Event::Keepalive) => {
                self.state = BgpState::Established;
                self.last_error = None;
                self.backoff = FIRST_BACKOFF;
                self.hold_timer(now);
                let negotiated = self.negotiated.clone().expect("negotiated in OpenConfirm");
                actions.push(Action::Established(negotiated));
            }
            (BgpState::OpenConfirm | BgpState::Established, Event::KeepaliveTimerExpires) => {
                actions.push(Action::SendKeepalive);
                self.keepalive_timer(now);
            }
            (BgpState::Established, Event::Keepalive | Event::Update) => self.hold_timer(now),
            (BgpState::Established, Event::RouteRefresh(family)) => {
                self.hold_timer(now);
                actions.extend(family.map(Action::Resend));
            }
            (BgpState::Established, Event::BfdDown(why)) => {
                let cease = BgpNotificationMessage::CeaseError(CeaseError::BfdDown {
                    value: Box::new([]),
                });
                self.refuse(cease, why, now, &mut actions);
            }
            (state, Event::HoldTimerExpires) if self.connected() => {
                let why = if state == BgpState::OpenSent {
                    "no OPEN from the peer within 240 s"
                } else {
                    "nothing heard from the peer within the hold time"
                };
                self.refuse(hold_expired(), why.into(), now, &mut actions);
            }
            (_, Event::Notification(notification)) if self.connected() => {
                self.fail(
                    format!("received NOTIFICATION {}", message::describe(&notification)),
                    now,
                    &mut actions,
                );
            }
            (_, Event::Malformed(Some(notification), why)) if self.connected() => {
                self.refuse(notification, why, now, &mut actions);
            }
            (_, Event::Malformed(None, why) | Event::TcpConnectionFails(why))
                if self.connected() || self.state == BgpState::Connect =>
            {
                self.fail(why, now, &mut actions);
            }
            (
                state @ (BgpState::OpenSent | BgpState::OpenConfirm | BgpState::Established),
                event
                @ (Event::Open(_) | Event::Keepalive | Event::Update | Event::RouteRefresh(_)),
            ) => {
                let what = match event {
                    Event::Open(_) => "OPEN",
                    Event::Keepalive => "KEEPALIVE",
                    Event::Update => "UPDATE",
                    _ => "ROUTE-REFRESH",
                };
                let why = match state {
                    BgpState::OpenSent => format!("unexpected {what} before OPEN"),
                    BgpState::OpenConfirm => format!("unexpected {what} before KEEPALIVE"),
                    _ => format!("{what} on an established session"),
                };
                self.refuse(fsm_error(state), why, now, &mut actions);
            }
            // Anything else (a BFD change before Established, a timer that
            // no longer applies) changes nothing.
            _ => {}
        }
        actions
    }
}

#[cfg(test)]
mod tests;
