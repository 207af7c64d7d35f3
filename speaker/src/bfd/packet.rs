//! BFD Control packets (RFC 5880 section 4): parsing with every check of
//! section 6.8.6 that needs no session, encoding, and the authentication
//! section (keyed MD5 and SHA1, plain and meticulous; simple password is
//! read but never configured). Pure: bytes in, values out.

use std::fmt;

/// The protocol version this implements.
pub const VERSION: u8 = 1;
/// The mandatory part of a Control packet.
pub const HEADER: usize = 24;

/// RFC 5880 session states, as on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    /// Held down by an operator.
    AdminDown = 0,
    /// Down, or not yet up.
    Down = 1,
    /// Heard the peer, waiting for it to hear us.
    Init = 2,
    /// Both sides hear each other.
    Up = 3,
}

impl State {
    fn from_bits(bits: u8) -> State {
        match bits & 3 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::AdminDown => "AdminDown",
            State::Down => "Down",
            State::Init => "Init",
            State::Up => "Up",
        })
    }
}

/// RFC 5880 diagnostic codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Diag {
    /// No diagnostic.
    #[default]
    None,
    /// Control Detection Time Expired.
    DetectExpired,
    /// Echo Function Failed.
    EchoFailed,
    /// Neighbor Signaled Session Down.
    NeighborDown,
    /// Forwarding Plane Reset.
    ForwardingReset,
    /// Path Down.
    PathDown,
    /// Concatenated Path Down.
    ConcatenatedPathDown,
    /// Administratively Down.
    AdminDown,
    /// Reverse Concatenated Path Down.
    ReverseConcatenatedPathDown,
    /// A code this implementation does not know (kept as is).
    Other(u8),
}

impl Diag {
    fn from_code(code: u8) -> Diag {
        match code {
            0 => Diag::None,
            1 => Diag::DetectExpired,
            2 => Diag::EchoFailed,
            3 => Diag::NeighborDown,
            4 => Diag::ForwardingReset,
            5 => Diag::PathDown,
            6 => Diag::ConcatenatedPathDown,
            7 => Diag::AdminDown,
            8 => Diag::ReverseConcatenatedPathDown,
            other => Diag::Other(other),
        }
    }

    fn code(self) -> u8 {
        match self {
            Diag::None => 0,
            Diag::DetectExpired => 1,
            Diag::EchoFailed => 2,
            Diag::NeighborDown => 3,
            Diag::ForwardingReset => 4,
            Diag::PathDown => 5,
            Diag::ConcatenatedPathDown => 6,
            Diag::AdminDown => 7,
            Diag::ReverseConcatenatedPathDown => 8,
            Diag::Other(code) => code & 0x1f,
        }
    }

    /// What it means, for a status message.
    pub fn describe(self) -> String {
        match self {
            Diag::None => "no diagnostic".into(),
            Diag::DetectExpired => "control detection time expired".into(),
            Diag::EchoFailed => "echo function failed".into(),
            Diag::NeighborDown => "neighbor signaled session down".into(),
            Diag::ForwardingReset => "forwarding plane reset".into(),
            Diag::PathDown => "path down".into(),
            Diag::ConcatenatedPathDown => "concatenated path down".into(),
            Diag::AdminDown => "administratively down".into(),
            Diag::ReverseConcatenatedPathDown => "reverse concatenated path down".into(),
            Diag::Other(code) => format!("diagnostic {code}"),
        }
    }
}

/// The authentication types of RFC 5880 section 4.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthType {
    /// Simple Password (read, never configured: the password would travel in clear).
    SimplePassword = 1,
    /// Keyed MD5.
    KeyedMd5 = 2,
    /// Meticulous Keyed MD5.
    MeticulousKeyedMd5 = 3,
    /// Keyed SHA1.
    KeyedSha1 = 4,
    /// Meticulous Keyed SHA1.
    MeticulousKeyedSha1 = 5,
}

impl AuthType {
    fn from_code(code: u8) -> Option<AuthType> {
        Some(match code {
            1 => AuthType::SimplePassword,
            2 => AuthType::KeyedMd5,
            3 => AuthType::MeticulousKeyedMd5,
            4 => AuthType::KeyedSha1,
            5 => AuthType::MeticulousKeyedSha1,
            _ => return None,
        })
    }

    /// Whether the sequence number must grow with every packet.
    pub fn meticulous(self) -> bool {
        matches!(
            self,
            AuthType::MeticulousKeyedMd5 | AuthType::MeticulousKeyedSha1
        )
    }

    /// The digest's length (the key is padded to it), for the keyed types.
    pub fn digest_len(self) -> usize {
        match self {
            AuthType::KeyedMd5 | AuthType::MeticulousKeyedMd5 => 16,
            AuthType::KeyedSha1 | AuthType::MeticulousKeyedSha1 => 20,
            AuthType::SimplePassword => 0,
        }
    }

    /// The authentication section's length on the wire, for the keyed types.
    pub fn section_len(self) -> usize {
        8 + self.digest_len()
    }
}

impl fmt::Display for AuthType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthType::SimplePassword => "simple password",
            AuthType::KeyedMd5 => "keyed MD5",
            AuthType::MeticulousKeyedMd5 => "meticulous keyed MD5",
            AuthType::KeyedSha1 => "keyed SHA1",
            AuthType::MeticulousKeyedSha1 => "meticulous keyed SHA1",
        })
    }
}

/// A received authentication section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthSection {
    /// Its type.
    pub kind: AuthType,
    /// The key ID.
    pub key_id: u8,
    /// The sequence number (keyed types; 0 for simple password).
    pub sequence: u32,
}

/// The fields of a Control packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub diag: Diag,
    pub state: State,
    pub poll: bool,
    pub final_: bool,
    /// Control Plane Independent.
    pub cpi: bool,
    pub demand: bool,
    pub detect_mult: u8,
    pub my_discr: u32,
    pub your_discr: u32,
    /// Microseconds.
    pub desired_min_tx: u32,
    /// Microseconds.
    pub required_min_rx: u32,
    /// Microseconds; 0: no echo.
    pub required_min_echo_rx: u32,
    /// The authentication section, when the A bit is set.
    pub auth: Option<AuthSection>,
}

/// Why a packet is dropped before any session sees it (section 6.8.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Shorter than its own Length field or than 24 bytes.
    Truncated,
    /// Not version 1.
    Version(u8),
    /// The Length field is below the minimum or beyond the datagram.
    Length(u8),
    /// Detect Mult is zero.
    ZeroDetectMult,
    /// The Multipoint bit is set.
    Multipoint,
    /// My Discriminator is zero.
    ZeroMyDiscriminator,
    /// Your Discriminator is zero but the state is Init or Up.
    NoYourDiscriminator,
    /// An authentication section that cannot be read.
    Auth(String),
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::Truncated => write!(f, "truncated packet"),
            Malformed::Version(v) => write!(f, "version {v}, not 1"),
            Malformed::Length(l) => write!(f, "bad length field {l}"),
            Malformed::ZeroDetectMult => write!(f, "detect multiplier 0"),
            Malformed::Multipoint => write!(f, "multipoint bit set"),
            Malformed::ZeroMyDiscriminator => write!(f, "my discriminator 0"),
            Malformed::NoYourDiscriminator => {
                write!(f, "your discriminator 0 in state Init or Up")
            }
            Malformed::Auth(why) => write!(f, "authentication section: {why}"),
        }
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Reads a datagram. Only the `Length` bytes count (anything after is
/// ignored, as the RFC allows for padding).
pub fn parse(datagram: &[u8]) -> Result<Packet, Malformed> {
    if datagram.len() < HEADER {
        return Err(Malformed::Truncated);
    }
    let version = datagram[0] >> 5;
    if version != VERSION {
        return Err(Malformed::Version(version));
    }
    let flags = datagram[1];
    let has_auth = flags & 0x04 != 0;
    let length = datagram[3];
    let minimum = if has_auth { HEADER + 2 } else { HEADER };
    if usize::from(length) < minimum || usize::from(length) > datagram.len() {
        return Err(Malformed::Length(length));
    }
    let detect_mult = datagram[2];
    if detect_mult == 0 {
        return Err(Malformed::ZeroDetectMult);
    }
    if flags & 0x01 != 0 {
        return Err(Malformed::Multipoint);
    }
    let state = State::from_bits(flags >> 6);
    let my_discr = u32_at(datagram, 4);
    if my_discr == 0 {
        return Err(Malformed::ZeroMyDiscriminator);
    }
    let your_discr = u32_at(datagram, 8);
    if your_discr == 0 && matches!(state, State::Init | State::Up) {
        return Err(Malformed::NoYourDiscriminator);
    }
    let packet = &datagram[..usize::from(length)];
    let auth = if has_auth {
        Some(auth_section(&packet[HEADER..])?)
    } else {
        None
    };
    Ok(Packet {
        diag: Diag::from_code(datagram[0] & 0x1f),
        state,
        poll: flags & 0x20 != 0,
        final_: flags & 0x10 != 0,
        cpi: flags & 0x08 != 0,
        demand: flags & 0x02 != 0,
        detect_mult,
        my_discr,
        your_discr,
        desired_min_tx: u32_at(datagram, 12),
        required_min_rx: u32_at(datagram, 16),
        required_min_echo_rx: u32_at(datagram, 20),
        auth,
    })
}

fn auth_section(section: &[u8]) -> Result<AuthSection, Malformed> {
    let bad = |why: String| Malformed::Auth(why);
    let code = section[0];
    let kind = AuthType::from_code(code).ok_or_else(|| bad(format!("unknown type {code}")))?;
    let len = usize::from(*section.get(1).ok_or_else(|| bad("no length".into()))?);
    if len > section.len() {
        return Err(bad(format!("length {len} beyond the packet")));
    }
    match kind {
        AuthType::SimplePassword => {
            if !(4..=19).contains(&len) {
                return Err(bad(format!("simple password section of length {len}")));
            }
            Ok(AuthSection {
                kind,
                key_id: section[2],
                sequence: 0,
            })
        }
        _ => {
            if len != kind.section_len() {
                return Err(bad(format!("{kind} section of length {len}")));
            }
            Ok(AuthSection {
                kind,
                key_id: section[2],
                sequence: u32_at(section, 4),
            })
        }
    }
}

/// Encodes a packet; `auth` (type, key ID, key, sequence) adds a keyed
/// authentication section signed over the whole packet.
pub fn encode(packet: &Packet, auth: Option<(AuthType, u8, &[u8], u32)>) -> Vec<u8> {
    let auth_len = auth.map_or(0, |(kind, ..)| kind.section_len());
    let length = HEADER + auth_len;
    let mut out = Vec::with_capacity(length);
    out.push((VERSION << 5) | packet.diag.code());
    let mut flags = (packet.state as u8) << 6;
    for (set, bit) in [
        (packet.poll, 0x20),
        (packet.final_, 0x10),
        (packet.cpi, 0x08),
        (auth.is_some(), 0x04),
        (packet.demand, 0x02),
    ] {
        if set {
            flags |= bit;
        }
    }
    out.push(flags);
    out.push(packet.detect_mult);
    out.push(u8::try_from(length).expect("a control packet is short"));
    for value in [
        packet.my_discr,
        packet.your_discr,
        packet.desired_min_tx,
        packet.required_min_rx,
        packet.required_min_echo_rx,
    ] {
        out.extend_from_slice(&value.to_be_bytes());
    }
    if let Some((kind, key_id, key, sequence)) = auth {
        out.push(kind as u8);
        out.push(u8::try_from(kind.section_len()).expect("short section"));
        out.push(key_id);
        out.push(0);
        out.extend_from_slice(&sequence.to_be_bytes());
        let at = out.len();
        out.extend_from_slice(&padded(key, kind.digest_len()));
        let digest = digest(kind, &out);
        out[at..].copy_from_slice(&digest);
    }
    out
}

fn padded(key: &[u8], len: usize) -> Vec<u8> {
    let mut out = key.iter().copied().take(len).collect::<Vec<u8>>();
    out.resize(len, 0);
    out
}

fn digest(kind: AuthType, bytes: &[u8]) -> Vec<u8> {
    match kind {
        AuthType::KeyedSha1 | AuthType::MeticulousKeyedSha1 => {
            ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes)
                .as_ref()
                .to_vec()
        }
        AuthType::KeyedMd5 | AuthType::MeticulousKeyedMd5 => md5::compute(bytes).0.to_vec(),
        AuthType::SimplePassword => Vec::new(),
    }
}

/// Whether a received datagram's keyed digest is right for `key`: the
/// digest field replaced by the padded key, hashed, compared in constant
/// time.
pub fn verify(datagram: &[u8], kind: AuthType, key: &[u8]) -> bool {
    let len = kind.digest_len();
    let end = HEADER + kind.section_len();
    if len == 0 || datagram.len() < end {
        return false;
    }
    let mut copy = datagram[..end].to_vec();
    let received = copy[end - len..end].to_vec();
    copy[end - len..end].copy_from_slice(&padded(key, len));
    let expected = digest(kind, &copy);
    // Constant time: every byte is compared whatever the first difference.
    expected.len() == received.len()
        && expected
            .iter()
            .zip(&received)
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet() -> Packet {
        Packet {
            diag: Diag::None,
            state: State::Down,
            poll: false,
            final_: false,
            cpi: false,
            demand: false,
            detect_mult: 3,
            my_discr: 7,
            your_discr: 0,
            desired_min_tx: 1_000_000,
            required_min_rx: 300_000,
            required_min_echo_rx: 0,
            auth: None,
        }
    }

    #[test]
    fn a_packet_reads_back_as_written_with_every_flag() {
        let mut p = packet();
        p.state = State::Up;
        p.your_discr = 9;
        p.poll = true;
        p.cpi = true;
        p.diag = Diag::NeighborDown;
        let bytes = encode(&p, None);
        assert_eq!(bytes.len(), 24);
        assert_eq!(bytes[0], 0x23, "version 1, diag 3");
        assert_eq!(bytes[1], 0xe8, "Up, P, C");
        assert_eq!(parse(&bytes), Ok(p));
    }

    #[test]
    fn section_6_8_6_checks_drop_what_no_session_may_see() {
        let good = encode(&packet(), None);
        let with = |i: usize, v: u8| {
            let mut b = good.clone();
            b[i] = v;
            b
        };
        assert_eq!(parse(&good[..23]), Err(Malformed::Truncated));
        assert_eq!(parse(&with(0, 0x40)), Err(Malformed::Version(2)));
        assert_eq!(parse(&with(3, 23)), Err(Malformed::Length(23)));
        assert_eq!(parse(&with(3, 30)), Err(Malformed::Length(30)));
        assert_eq!(parse(&with(2, 0)), Err(Malformed::ZeroDetectMult));
        assert_eq!(parse(&with(1, 0x41)), Err(Malformed::Multipoint));
        assert_eq!(parse(&with(7, 0)), Err(Malformed::ZeroMyDiscriminator));
        // Up with your discriminator 0.
        assert_eq!(parse(&with(1, 0xc0)), Err(Malformed::NoYourDiscriminator));
        // The A bit with no room for a section.
        assert_eq!(parse(&with(1, 0x44)), Err(Malformed::Length(24)));
        // Padding after Length is ignored.
        let mut padded = good.clone();
        padded.extend_from_slice(&[0; 8]);
        assert_eq!(parse(&padded), Ok(packet()));
    }

    #[test]
    fn keyed_sha1_and_md5_sign_and_verify_and_a_wrong_key_or_a_changed_bit_fails() {
        for kind in [
            AuthType::KeyedSha1,
            AuthType::MeticulousKeyedSha1,
            AuthType::KeyedMd5,
            AuthType::MeticulousKeyedMd5,
        ] {
            let bytes = encode(&packet(), Some((kind, 5, b"secret", 42)));
            assert_eq!(bytes.len(), 24 + kind.section_len(), "{kind}");
            let read = parse(&bytes).expect("parses");
            assert_eq!(
                read.auth,
                Some(AuthSection {
                    kind,
                    key_id: 5,
                    sequence: 42
                })
            );
            assert!(verify(&bytes, kind, b"secret"), "{kind}");
            assert!(!verify(&bytes, kind, b"secreT"), "{kind}");
            let mut changed = bytes.clone();
            changed[2] = 4;
            assert!(!verify(&changed, kind, b"secret"), "{kind}");
        }
    }

    #[test]
    fn the_sha1_digest_is_over_the_packet_with_the_key_in_place() {
        // Computed independently: the packet with the zero-padded key in the
        // digest field, hashed with SHA1, then the digest put in its place.
        let bytes = encode(&packet(), Some((AuthType::KeyedSha1, 1, b"k", 1)));
        let mut with_key = bytes.clone();
        with_key[32..52].copy_from_slice(&{
            let mut k = [0u8; 20];
            k[0] = b'k';
            k
        });
        let expected = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &with_key);
        assert_eq!(&bytes[32..52], expected.as_ref());
    }

    #[test]
    fn malformed_authentication_sections_are_named() {
        let mut bytes = encode(&packet(), Some((AuthType::KeyedSha1, 1, b"k", 1)));
        bytes[24] = 9;
        assert!(
            matches!(parse(&bytes), Err(Malformed::Auth(why)) if why.contains("unknown type 9"))
        );
        let mut bytes = encode(&packet(), Some((AuthType::KeyedSha1, 1, b"k", 1)));
        bytes[25] = 24;
        assert!(matches!(parse(&bytes), Err(Malformed::Auth(_))));
    }
}
