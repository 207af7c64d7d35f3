//! The BFD session guarding a BGP session (RFC 5882): started, reconfigured
//! and stopped as the NodeAnnouncement's `bfd` settings say, its state handed
//! to the BGP session, which goes down at once when BFD fails.

use std::time::Duration;

use ferrolb_api::bfdprofile::BfdAuthentication;
use ferrolb_api::nodeannouncement::{BfdSettings, BfdState, BfdStatus};
use tokio::sync::watch;

use super::config::Peer;
use super::session::Context;
use crate::bfd::packet::{AuthType, State};
use crate::bfd::session::{Auth, Params};
use crate::bfd::socket::{self, Status};

/// Why a BGP session must go down on this BFD change, if it must: the BFD
/// session entered Down from another state, having been Up, and not because
/// the router went AdminDown.
pub fn failure(before: Option<State>, now: &Status) -> Option<String> {
    (now.failed() && before != Some(State::Down))
        .then(|| format!("BFD session down: {}", now.diag.describe()))
}

/// The CRD's view of a BFD session's status.
pub fn status(status: &Status) -> BfdStatus {
    let state = match status.state {
        State::AdminDown => BfdState::AdminDown,
        State::Down => BfdState::Down,
        State::Init => BfdState::Init,
        State::Up => BfdState::Up,
    };
    let mut parts = Vec::new();
    if status.state != State::Up && status.ups > 0 {
        parts.push(format!("went down: {}", status.diag.describe()));
    }
    if status.state != State::Up && status.ups == 0 && status.dropped == 0 {
        parts.push(
            "no valid packet from the router yet (is BFD configured there for this node?)".into(),
        );
    }
    if let Some(drop) = &status.last_drop
        && status.state != State::Up
    {
        parts.push(format!(
            "{} packet(s) dropped, last: {drop}",
            status.dropped
        ));
    }
    BfdStatus {
        state,
        message: (!parts.is_empty()).then(|| parts.join("; ")),
    }
}

fn auth_type(kind: ferrolb_api::bfdprofile::BfdAuthType) -> AuthType {
    use ferrolb_api::bfdprofile::BfdAuthType as T;
    match kind {
        T::KeyedSHA1 => AuthType::KeyedSha1,
        T::MeticulousKeyedSHA1 => AuthType::MeticulousKeyedSha1,
        T::KeyedMD5 => AuthType::KeyedMd5,
        T::MeticulousKeyedMD5 => AuthType::MeticulousKeyedMd5,
    }
}

/// The session parameters of a profile, the key read already.
pub fn params(settings: &BfdSettings, key: Option<Vec<u8>>) -> Params {
    Params {
        desired_min_tx: settings.transmit_interval.saturating_mul(1000),
        required_min_rx: settings.receive_interval.saturating_mul(1000),
        detect_mult: settings.detect_multiplier.max(1),
        passive: settings.passive_mode,
        auth: settings
            .authentication
            .as_ref()
            .zip(key)
            .map(|(a, key)| Auth {
                kind: auth_type(a.kind),
                key_id: a.key_id,
                key,
            }),
    }
}

async fn key(
    context: &Context,
    auth: Option<&BfdAuthentication>,
) -> Result<Option<Vec<u8>>, String> {
    match auth {
        None => Ok(None),
        Some(a) => (context.passwords)(a.secret_key_ref.clone())
            .await
            .map(Some)
            .map_err(|why| format!("BFD key: {why}")),
    }
}

/// Runs the BFD side of one BGP session until the session's handle is gone.
pub async fn guard(
    peer: Peer,
    mut settings: watch::Receiver<Option<BfdSettings>>,
    out: watch::Sender<Option<Status>>,
    context: Context,
) {
    let mut running: Option<(socket::Handle, watch::Receiver<Status>)> = None;
    loop {
        let wanted = settings.borrow_and_update().clone();
        match wanted {
            None => running = None,
            Some(wanted) => match key(&context, wanted.authentication.as_ref()).await {
                Err(why) => {
                    running = None;
                    tracing::warn!(session = %peer.name, %why, "BFD not started");
                    let _ = out.send(Some(Status {
                        last_drop: Some(why),
                        ..Status::default()
                    }));
                    context.changed.notify_one();
                }
                Ok(key) => {
                    let params = params(&wanted, key);
                    match &running {
                        Some((handle, _)) => handle.configure(params, wanted.minimum_ttl),
                        None => {
                            let minimum_ttl = wanted.minimum_ttl;
                            match context
                                .bfd
                                .start(
                                    peer.address,
                                    peer.source,
                                    peer.multihop,
                                    minimum_ttl,
                                    params,
                                )
                                .await
                            {
                                Ok(handle) => {
                                    let watch = handle.watch();
                                    running = Some((handle, watch));
                                }
                                Err(e) => {
                                    tracing::warn!(session = %peer.name, error = %e, "BFD socket");
                                    let _ = out.send(Some(Status {
                                        last_drop: Some(format!("cannot open the BFD socket: {e}")),
                                        ..Status::default()
                                    }));
                                    context.changed.notify_one();
                                }
                            }
                        }
                    }
                }
            },
        }
        if running.is_none() && out.borrow().as_ref().is_some_and(|s| s.last_drop.is_none()) {
            let _ = out.send(None);
            context.changed.notify_one();
        }
        // Follow the BFD session's status until the settings change.
        loop {
            let status_changed = async {
                match running.as_mut() {
                    Some((_, watch)) => {
                        let _ = watch.changed().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                changed = settings.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
                () = status_changed => {
                    if let Some((_, watch)) = &running {
                        let now = watch.borrow().clone();
                        let _ = out.send(Some(now));
                        context.changed.notify_one();
                    }
                }
            }
        }
        // Settings changed: give the next pass a moment to settle (a
        // NodeAnnouncement rewrite often comes in bursts).
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
