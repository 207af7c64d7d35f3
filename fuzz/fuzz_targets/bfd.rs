//! The speaker's BFD input path: whatever datagrams arrive, the parser and
//! the session decide without panicking; a datagram the session drops leaves
//! its state as it was; and every packet the session sends parses back.

#![no_main]

use ferrolb_speaker::bfd::packet::{self, AuthType};
use ferrolb_speaker::bfd::session::{Action, Auth, Params, Session};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = packet::parse(data);
    let keyed = data.first().is_some_and(|b| b & 1 == 1);
    let params = Params {
        auth: keyed.then(|| Auth {
            kind: AuthType::MeticulousKeyedSha1,
            key_id: 1,
            key: b"fuzz".to_vec(),
        }),
        ..Params::default()
    };
    let mut session = Session::new(params, 0x0a0b0c0d, 0, 1);
    let mut now = 0;
    // The input as a run of datagrams, each led by its length byte.
    let mut rest = data.get(1..).unwrap_or_default();
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (datagram, next) = tail.split_at(len);
        rest = next;
        now += 50_000;
        let before = (session.state(), session.remote_discr());
        match session.receive(datagram, now) {
            Err(_) => assert_eq!((session.state(), session.remote_discr()), before),
            Ok(actions) => check(&actions),
        }
        let actions = session.tick(now);
        check(&actions);
    }
});

fn check(actions: &[Action]) {
    for action in actions {
        if let Action::Send(bytes) = action {
            packet::parse(bytes).expect("a packet the session sends parses");
        }
    }
}
