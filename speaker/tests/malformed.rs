//! Malformed input from a peer closes that session, after the NOTIFICATION its
//! error calls for, and nothing else: the other session stays Established and
//! the bad one reconnects. The peers are scripted on loopback with netgauze's
//! codec, so each can send exactly the bytes a broken router would.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use ferrolb_api::nodeannouncement::BgpState;
use ferrolb_speaker::bgp::config::{Attributes, Peer};
use ferrolb_speaker::bgp::session::{Context, Handle, Status};
use futures::{SinkExt, StreamExt};
use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::codec::BgpCodec;
use netgauze_bgp_pkt::notification::BgpNotificationMessage;
use netgauze_bgp_pkt::open::BgpOpenMessage;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::codec::Framed;

fn peer(port: u16) -> Peer {
    Peer {
        name: format!("p{port}"),
        my_asn: 64512,
        peer_asn: Some(64500),
        dynamic: None,
        address: "127.0.0.1".parse().unwrap(),
        port,
        source: None,
        router_id: Some(Ipv4Addr::new(10, 0, 0, 2)),
        hold_time: Duration::from_secs(9),
        keepalive: Duration::from_secs(3),
        connect_retry: Duration::from_secs(1),
        multihop: false,
        graceful_restart: false,
        password: None,
        dual_stack: false,
    }
}

fn context() -> Context {
    Context {
        netns: None,
        passwords: Arc::new(|_| Box::pin(async { Err("none".to_string()) })),
        changed: Arc::new(Notify::new()),
        bfd: ferrolb_speaker::bfd::socket::Bfd::new(None),
    }
}

fn routes() -> BTreeMap<ipnet::IpNet, Attributes> {
    [("172.20.0.1/32".parse().unwrap(), Attributes::default())].into()
}

fn open(asn: u16, hold: u16) -> BgpMessage {
    BgpMessage::Open(BgpOpenMessage::new(
        asn,
        hold,
        Ipv4Addr::new(10, 0, 0, 1),
        [],
    ))
}

/// Accepts the speaker, reads its OPEN, answers with `our_open`; when that is
/// a good OPEN, completes the handshake.
async fn accept(listener: &TcpListener, our_open: BgpMessage) -> Framed<TcpStream, BgpCodec> {
    let (stream, _) = listener.accept().await.unwrap();
    let mut framed = Framed::new(stream, BgpCodec::new(true));
    let (first, _) = framed.next().await.unwrap().unwrap();
    assert!(
        matches!(first, BgpMessage::Open(_)),
        "the speaker opens with OPEN"
    );
    let good = matches!(&our_open, BgpMessage::Open(o) if o.my_as() == 64500 && o.hold_time() >= 3);
    framed.send(our_open).await.unwrap();
    if good {
        framed.send(BgpMessage::KeepAlive).await.unwrap();
        let (second, _) = framed.next().await.unwrap().unwrap();
        assert!(matches!(second, BgpMessage::KeepAlive));
    }
    framed
}

/// Reads until a NOTIFICATION (skipping the UPDATEs and KEEPALIVEs before it).
async fn notification(framed: &mut Framed<TcpStream, BgpCodec>) -> BgpNotificationMessage {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), framed.next()).await {
            Ok(Some(Ok((BgpMessage::Notification(n), _)))) => return n,
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a NOTIFICATION, got {other:?}"),
        }
    }
}

async fn wait_state(handle: &Handle, state: BgpState) -> Status {
    for _ in 0..100 {
        let status = handle.status();
        if status.state == state {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never reached {state:?}: {:?}", handle.status());
}

/// Whether a NOTIFICATION is the one expected.
type Expected = fn(&BgpNotificationMessage) -> bool;

fn header(length: u16, kind: u8) -> Vec<u8> {
    let mut bytes = vec![0xff; 16];
    bytes.extend(length.to_be_bytes());
    bytes.push(kind);
    bytes
}

/// An UPDATE with path attributes `attributes` whose declared total length
/// is `declared`.
fn update(attributes: &[u8], declared: u16) -> Vec<u8> {
    let body_len = 2 + 2 + attributes.len();
    let mut bytes = header((19 + body_len) as u16, 2);
    bytes.extend(0u16.to_be_bytes());
    bytes.extend(declared.to_be_bytes());
    bytes.extend(attributes);
    bytes
}

#[tokio::test]
async fn malformed_messages_close_only_their_session_with_the_right_notification() {
    let steady_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let steady = Handle::start(
        peer(steady_listener.local_addr().unwrap().port()),
        routes(),
        None,
        context(),
    );
    let mut steady_peer = accept(&steady_listener, open(64500, 90)).await;
    wait_state(&steady, BgpState::Established).await;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let session = Handle::start(
        peer(listener.local_addr().unwrap().port()),
        routes(),
        None,
        context(),
    );
    // (raw bytes sent after the handshake, NOTIFICATION expected, words in lastError)
    let cases: Vec<(Vec<u8>, Expected, &str)> = vec![
        (
            {
                let mut b = header(19, 4);
                b[3] = 0;
                b
            },
            |n| matches!(n, BgpNotificationMessage::MessageHeaderError(e) if format!("{e:?}").starts_with("ConnectionNotSynchronized")),
            "Message Header Error / ConnectionNotSynchronized",
        ),
        (
            header(18, 4),
            |n| matches!(n, BgpNotificationMessage::MessageHeaderError(e) if format!("{e:?}").starts_with("BadMessageLength")),
            "Message Header Error / BadMessageLength",
        ),
        (
            header(19, 9),
            |n| matches!(n, BgpNotificationMessage::MessageHeaderError(e) if format!("{e:?}").starts_with("BadMessageType")),
            "Message Header Error / BadMessageType",
        ),
        (
            // The attribute list claims 10 bytes and holds 4.
            update(&[0x40, 1, 1, 0], 10),
            |n| matches!(n, BgpNotificationMessage::UpdateMessageError(_)),
            "UPDATE Message Error",
        ),
        (
            {
                let mut b = header(19, 4);
                b.extend([0u8; 3]);
                b[17] = 22;
                b
            },
            |n| matches!(n, BgpNotificationMessage::MessageHeaderError(e) if format!("{e:?}").starts_with("BadMessageLength")),
            "Message Header Error / BadMessageLength",
        ),
    ];
    for (bytes, expected, words) in cases {
        let mut framed = accept(&listener, open(64500, 90)).await;
        wait_state(&session, BgpState::Established).await;
        framed.get_mut().write_all(&bytes).await.unwrap();
        let got = notification(&mut framed).await;
        assert!(expected(&got), "for {bytes:02x?} got {got:?}");
        // The connection is closed after it.
        let closed = tokio::time::timeout(Duration::from_secs(5), framed.next())
            .await
            .unwrap();
        assert!(
            closed.is_none() || matches!(closed, Some(Err(_))),
            "closed after the NOTIFICATION"
        );
        let status = wait_state(&session, BgpState::Active).await;
        let error = status.last_error.unwrap_or_default();
        assert!(error.contains(words), "lastError {error:?} names {words}");
        // The other session never noticed.
        assert_eq!(steady.status().state, BgpState::Established);
    }
    // A well-framed UPDATE with a bad attribute value (ORIGIN 7) is handled
    // as RFC 7606 says: treat-as-withdraw, which for a speaker that ignores
    // received routes means the session stays up; the error is counted.
    let mut framed = accept(&listener, open(64500, 90)).await;
    wait_state(&session, BgpState::Established).await;
    framed
        .get_mut()
        .write_all(&update(&[0x40, 1, 1, 7], 4))
        .await
        .unwrap();
    framed.send(BgpMessage::KeepAlive).await.unwrap();
    for _ in 0..100 {
        if session.status().attribute_errors > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = session.status();
    assert_eq!(status.attribute_errors, 1, "{status:?}");
    assert_eq!(status.state, BgpState::Established);
    drop(framed);
    wait_state(&session, BgpState::Active).await;
    // OPEN problems: the wrong AS, and a hold time below 3 s.
    for (bad_open, words) in [
        (open(65000, 90), "OPEN Message Error / BadPeerAs"),
        (open(64500, 2), "OPEN Message Error / UnacceptableHoldTime"),
    ] {
        let mut framed = accept(&listener, bad_open).await;
        let got = notification(&mut framed).await;
        assert!(
            matches!(got, BgpNotificationMessage::OpenMessageError(_)),
            "{got:?}"
        );
        let status = wait_state(&session, BgpState::Active).await;
        let error = status.last_error.unwrap_or_default();
        assert!(error.contains(words), "lastError {error:?} names {words}");
    }
    // And the session still comes back when the peer behaves.
    let _framed = accept(&listener, open(64500, 90)).await;
    wait_state(&session, BgpState::Established).await;
    assert_eq!(steady.status().state, BgpState::Established);
    // The steady peer got its route and nothing else happened to it.
    let mut got_update = false;
    while let Ok(Some(Ok((message, _)))) =
        tokio::time::timeout(Duration::from_millis(300), steady_peer.next()).await
    {
        got_update |= matches!(message, BgpMessage::Update(_));
    }
    assert!(got_update);
}
