//! BGP: a native BGP-4 speaker that only advertises. One session per
//! `spec.bgp` entry of the node's NodeAnnouncement; the wire format is
//! netgauze's, the state machine and timers are here.

pub mod bfd;
pub mod config;
pub mod fsm;
pub mod md5;
pub mod message;
pub mod session;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrolb_api::nodeannouncement::{BgpSession, BgpState, SessionState};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::{Notify, watch};

use session::{Context, Handle, Passwords, Status, Stop};

/// How long a stopping session may take to say goodbye.
const GOODBYE: Duration = Duration::from_secs(2);

/// The sessions' statuses, for /metrics.
#[derive(Clone, Default, Debug)]
pub struct Registry(Arc<Mutex<BTreeMap<String, watch::Receiver<Status>>>>);

impl Registry {
    /// Every session's current status, by name.
    pub fn snapshot(&self) -> Vec<(String, Status)> {
        self.0
            .lock()
            .expect("registry lock")
            .iter()
            .map(|(name, status)| (name.clone(), status.borrow().clone()))
            .collect()
    }
}

/// One per-session metric family.
pub struct Family {
    /// Its name after `ferrolb_speaker_`.
    pub name: &'static str,
    /// Its help text.
    pub help: &'static str,
    /// A counter (else a gauge).
    pub counter: bool,
    /// Its value from a session's status.
    pub pick: fn(&Status) -> u64,
}

/// The per-session metric families.
pub const FAMILIES: [Family; 7] = [
    Family {
        name: "bgp_session_up",
        help: "1 when the session is Established",
        counter: false,
        pick: |s| u64::from(s.state == BgpState::Established),
    },
    Family {
        name: "bgp_prefixes_advertised",
        help: "Prefixes the peer holds from this speaker",
        counter: false,
        pick: |s| s.prefixes as u64,
    },
    Family {
        name: "bgp_updates_sent",
        help: "UPDATE messages sent",
        counter: true,
        pick: |s| s.updates_sent,
    },
    Family {
        name: "bgp_updates_received",
        help: "UPDATE messages received (and ignored)",
        counter: true,
        pick: |s| s.updates_received,
    },
    Family {
        name: "bgp_notifications_sent",
        help: "NOTIFICATION messages sent",
        counter: true,
        pick: |s| s.notifications_sent,
    },
    Family {
        name: "bgp_notifications_received",
        help: "NOTIFICATION messages received",
        counter: true,
        pick: |s| s.notifications_received,
    },
    Family {
        name: "bgp_attribute_errors",
        help: "Received UPDATEs with malformed attributes, treated as withdraw (RFC 7606)",
        counter: true,
        pick: |s| s.attribute_errors,
    },
];

/// The BGP side of a node: one session per `spec.bgp` entry.
pub struct Bgp {
    context: Context,
    sessions: BTreeMap<String, Handle>,
    /// Entries that could not be read, with why.
    invalid: BTreeMap<String, String>,
    registry: Registry,
}

impl Bgp {
    /// No sessions yet. Sessions connect from `netns` when given.
    pub fn new(netns: Option<PathBuf>, passwords: Passwords) -> Bgp {
        Bgp {
            context: Context {
                bfd: crate::bfd::socket::Bfd::new(netns.clone()),
                netns,
                passwords,
                changed: Arc::new(Notify::new()),
            },
            sessions: BTreeMap::new(),
            invalid: BTreeMap::new(),
            registry: Registry::default(),
        }
    }

    /// Poked whenever a session's status changes.
    pub fn changed(&self) -> Arc<Notify> {
        self.context.changed.clone()
    }

    /// The statuses for /metrics.
    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }

    /// Makes the sessions match `wanted`: new ones start, removed ones end
    /// with Cease / Peer De-configured, changed settings restart the session,
    /// changed routes are sent as UPDATEs on the running session.
    pub fn apply(&mut self, wanted: &[BgpSession]) {
        let mut read = BTreeMap::new();
        self.invalid.clear();
        for entry in wanted {
            match config::read(entry) {
                Ok(session) => {
                    read.insert(entry.name.clone(), session);
                }
                Err(why) => {
                    self.invalid.insert(entry.name.clone(), why);
                }
            }
        }
        let gone: Vec<String> = self
            .sessions
            .iter()
            .filter(|(name, handle)| read.get(*name).is_none_or(|s| s.peer != handle.peer))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(handle) = self.sessions.remove(&name) {
                tracing::info!(session = %name, "BGP session removed or changed: ending it");
                tokio::spawn(handle.stop(Stop::Deconfigured, GOODBYE));
            }
        }
        for (name, session) in read {
            match self.sessions.get(&name) {
                Some(handle) => {
                    handle.set_routes(session.routes);
                    handle.set_bfd(session.bfd);
                }
                None => {
                    let handle = Handle::start(
                        session.peer,
                        session.routes,
                        session.bfd,
                        self.context.clone(),
                    );
                    self.sessions.insert(name, handle);
                }
            }
        }
        let mut registry = self.registry.0.lock().expect("registry lock");
        *registry = self
            .sessions
            .iter()
            .map(|(name, h)| (name.clone(), h.watch()))
            .collect();
        drop(registry);
        self.context.changed.notify_one();
    }

    /// Per-session state for the NodeAnnouncement status.
    pub fn states(&self) -> Vec<SessionState> {
        let mut states: Vec<SessionState> = self
            .sessions
            .iter()
            .map(|(name, handle)| {
                let status = handle.status();
                SessionState {
                    name: name.clone(),
                    state: status.state,
                    since: Timestamp::try_from(status.since)
                        .ok()
                        .and_then(|t| Timestamp::from_second(t.as_second()).ok())
                        .map(Time),
                    prefixes_advertised: i32::try_from(status.prefixes).unwrap_or(i32::MAX),
                    last_error: status.last_error,
                    families_not_sent: status.unsent,
                    bfd: handle.bfd_status().map(|s| bfd::status(&s)),
                }
            })
            .collect();
        for (name, why) in &self.invalid {
            states.push(SessionState {
                name: name.clone(),
                state: BgpState::Idle,
                since: None,
                prefixes_advertised: 0,
                last_error: Some(format!("cannot read this session: {why}")),
                families_not_sent: None,
                bfd: None,
            });
        }
        states.sort_by(|a, b| a.name.cmp(&b.name));
        states
    }

    /// `established/configured`, such as `2/3`.
    pub fn summary(&self) -> String {
        let up = self
            .sessions
            .values()
            .filter(|h| h.status().state == BgpState::Established)
            .count();
        format!("{up}/{}", self.sessions.len() + self.invalid.len())
    }

    /// BFD sessions Up out of sessions with BFD, such as `2/2`; None when
    /// no session has BFD.
    pub fn bfd_summary(&self) -> Option<String> {
        let statuses: Vec<_> = self
            .sessions
            .values()
            .filter_map(|h| h.bfd_status())
            .collect();
        (!statuses.is_empty()).then(|| {
            let up = statuses
                .iter()
                .filter(|s| s.state == crate::bfd::packet::State::Up)
                .count();
            format!("{up}/{}", statuses.len())
        })
    }

    /// Ends every session as the speaker stops: Cease / Administrative
    /// Shutdown, or a silent close where graceful restart was negotiated.
    pub async fn shutdown(&mut self) {
        let stopping: Vec<_> = std::mem::take(&mut self.sessions)
            .into_values()
            .map(|h| h.stop(Stop::Shutdown, GOODBYE))
            .collect();
        futures::future::join_all(stopping).await;
    }
}
