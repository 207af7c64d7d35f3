//! The failover messages between speakers, over UDP on the node network, each
//! signed with HMAC-SHA256 under the cluster's failover key so nobody on the
//! segment can forge a takeover or a hand-off.
//!
//! ```text
//! "FLB2" | kind u8 | nonce u64 | echo u64 |
//! node name (u8 length + bytes) | ips (u16 count + entries) | taken (same) |
//! tag (first 16 bytes of the HMAC over everything before it)
//! entry: 4 + 4 bytes (IPv4) or 6 + 16 bytes (IPv6)
//! ```
//!
//! No message carries a clock: freshness is proven by echoing a number the
//! receiver made up itself a moment ago (see [`crate::failover`]), so a
//! clock step on any node changes nothing, and a replay is refused. No
//! message carries more than [`CHUNK`] IPs (longer lists go in several), so
//! a datagram stays under 1,200 bytes whatever the number of IPs: never
//! truncated, never fragmented.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ring::hmac;

const MAGIC: &[u8; 4] = b"FLB2";
const TAG: usize = 16;
/// The largest datagram accepted.
pub const MAX: usize = 9000;
/// At most this many IPs in one message's list: 48 IPv6 entries are 816
/// bytes, so a message with a full list and the longest node name stays
/// under 1,200 bytes.
pub const CHUNK: usize = 48;

/// `ips` in lists of at most [`CHUNK`]; one empty list for none.
pub fn chunks(ips: &[IpAddr]) -> Vec<Vec<IpAddr>> {
    if ips.is_empty() {
        return vec![Vec::new()];
    }
    ips.chunks(CHUNK).map(<[IpAddr]>::to_vec).collect()
}

/// What a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Standby → active: are you there? `taken`: the IPs it has taken over
    /// (the receiver must stop answering for them), honoured only when
    /// `echo` is a challenge the receiver sent it in a recent reply.
    Probe = 1,
    /// Active → standby: yes; `nonce` echoes the probe's, `echo` is a new
    /// challenge for the standby's next probes.
    Reply = 2,
    /// Active → standby on a planned stop: take `ips` now; `echo` is the
    /// nonce of a recent probe from that standby.
    Handoff = 3,
    /// Standby → active: taken; echoes the hand-off's nonce.
    HandoffAck = 4,
}

/// One failover message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// What it is.
    pub kind: Kind,
    /// A random number (echoed in replies and acknowledgements).
    pub nonce: u64,
    /// A number the receiver made up and sent earlier, proving this message
    /// is new (0 for none).
    pub echo: u64,
    /// The sending node.
    pub node: String,
    /// IPs, as the kind says.
    pub ips: Vec<IpAddr>,
    /// IPs taken over (probes only).
    pub taken: Vec<IpAddr>,
}

/// The shared failover key.
#[derive(Clone)]
pub struct Key(hmac::Key);

impl Key {
    /// A key from its bytes (the Secret's value).
    pub fn new(bytes: &[u8]) -> Key {
        Key(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Why a datagram was dropped.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejected {
    /// Not a failover message or cut short.
    Malformed,
    /// The signature does not match: a forgery, or a different key.
    BadSignature,
}

fn put_ips(out: &mut Vec<u8>, ips: &[IpAddr]) {
    out.extend((ips.len().min(u16::MAX as usize) as u16).to_be_bytes());
    for ip in ips.iter().take(u16::MAX as usize) {
        match ip {
            IpAddr::V4(v4) => {
                out.push(4);
                out.extend(v4.octets());
            }
            IpAddr::V6(v6) => {
                out.push(6);
                out.extend(v6.octets());
            }
        }
    }
}

/// Signs and encodes a message.
pub fn encode(key: &Key, message: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend(MAGIC);
    out.push(message.kind as u8);
    out.extend(message.nonce.to_be_bytes());
    out.extend(message.echo.to_be_bytes());
    let name = message.node.as_bytes();
    let name = &name[..name.len().min(255)];
    out.push(name.len() as u8);
    out.extend(name);
    put_ips(&mut out, &message.ips);
    put_ips(&mut out, &message.taken);
    let tag = hmac::sign(&key.0, &out);
    out.extend(&tag.as_ref()[..TAG]);
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Rejected> {
        if self.0.len() < n {
            return Err(Rejected::Malformed);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Rejected> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, Rejected> {
        let bytes: [u8; 8] = self.take(8)?.try_into().map_err(|_| Rejected::Malformed)?;
        Ok(u64::from_be_bytes(bytes))
    }

    fn ips(&mut self) -> Result<Vec<IpAddr>, Rejected> {
        let count = u16::from_be_bytes(self.take(2)?.try_into().map_err(|_| Rejected::Malformed)?);
        let mut ips = Vec::with_capacity(usize::from(count).min(1024));
        for _ in 0..count {
            ips.push(match self.u8()? {
                4 => {
                    let o: [u8; 4] = self.take(4)?.try_into().map_err(|_| Rejected::Malformed)?;
                    IpAddr::V4(Ipv4Addr::from(o))
                }
                6 => {
                    let o: [u8; 16] = self.take(16)?.try_into().map_err(|_| Rejected::Malformed)?;
                    IpAddr::V6(Ipv6Addr::from(o))
                }
                _ => return Err(Rejected::Malformed),
            });
        }
        Ok(ips)
    }
}

/// Checks the signature and decodes a datagram.
pub fn decode(key: &Key, datagram: &[u8]) -> Result<Message, Rejected> {
    if datagram.len() < MAGIC.len() + TAG || !datagram.starts_with(MAGIC) {
        return Err(Rejected::Malformed);
    }
    let (body, tag) = datagram.split_at(datagram.len() - TAG);
    let expected = hmac::sign(&key.0, body);
    // Constant-time comparison of the truncated tag.
    let mut difference = 0u8;
    for (a, b) in expected.as_ref()[..TAG].iter().zip(tag) {
        difference |= a ^ b;
    }
    if difference != 0 {
        return Err(Rejected::BadSignature);
    }
    let mut reader = Reader(&body[MAGIC.len()..]);
    let kind = match reader.u8()? {
        1 => Kind::Probe,
        2 => Kind::Reply,
        3 => Kind::Handoff,
        4 => Kind::HandoffAck,
        _ => return Err(Rejected::Malformed),
    };
    let nonce = reader.u64()?;
    let echo = reader.u64()?;
    let length = usize::from(reader.u8()?);
    let node = String::from_utf8(reader.take(length)?.to_vec()).map_err(|_| Rejected::Malformed)?;
    let ips = reader.ips()?;
    let taken = reader.ips()?;
    if !reader.0.is_empty() {
        return Err(Rejected::Malformed);
    }
    Ok(Message {
        kind,
        nonce,
        echo,
        node,
        ips,
        taken,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message {
        Message {
            kind: Kind::Probe,
            nonce: 42,
            echo: 7,
            node: "node-b".into(),
            ips: vec!["192.168.1.10".parse().unwrap(), "fd00::10".parse().unwrap()],
            taken: vec!["192.168.1.11".parse().unwrap()],
        }
    }

    #[test]
    fn any_number_of_ips_goes_in_messages_that_fit_one_unfragmented_datagram() {
        let key = Key::new(b"the cluster key");
        let ips: Vec<IpAddr> = (0..2_000u32)
            .map(|i| IpAddr::V6(Ipv6Addr::from((0xfd00_u128 << 112) | (u128::from(i) * 3))))
            .collect();
        let parts = chunks(&ips);
        assert_eq!(parts.concat(), ips);
        for part in &parts {
            let bytes = encode(
                &key,
                &Message {
                    node: "n".repeat(255),
                    ips: part.clone(),
                    taken: Vec::new(),
                    ..message()
                },
            );
            assert!(bytes.len() < 1_200, "{}", bytes.len());
        }
        assert_eq!(chunks(&[]), vec![Vec::<IpAddr>::new()]);
    }

    #[test]
    fn a_message_round_trips_under_the_same_key() {
        let key = Key::new(b"the cluster key");
        assert_eq!(decode(&key, &encode(&key, &message())), Ok(message()));
    }

    #[test]
    fn another_key_or_any_changed_byte_is_refused() {
        let key = Key::new(b"the cluster key");
        let bytes = encode(&key, &message());
        assert_eq!(
            decode(&Key::new(b"a guess"), &bytes),
            Err(Rejected::BadSignature)
        );
        for i in 4..bytes.len() {
            let mut tampered = bytes.clone();
            tampered[i] ^= 0x01;
            assert!(decode(&key, &tampered).is_err(), "byte {i} flipped");
        }
        assert_eq!(decode(&key, b"junk"), Err(Rejected::Malformed));
        let mut old = bytes.clone();
        old[3] = b'1';
        assert_eq!(
            decode(&key, &old),
            Err(Rejected::Malformed),
            "FLB1 is not read"
        );
        assert_eq!(
            decode(&key, &bytes[..bytes.len() - 1]),
            Err(Rejected::BadSignature)
        );
    }
}
