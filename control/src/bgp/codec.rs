//! The session's framing: netgauze's `BgpCodec` behind an RFC 4271 §6.1 header check.
//!
//! netgauze's decoder trusts the Length field before checking it, so a length above 4096 would
//! make it wait for bytes that never come, and a length below 19 would be cut from the buffer
//! as a "message". [`check_header`] runs first on every 19-byte header and turns marker,
//! length and type errors into the Message Header Error NOTIFICATION the RFC asks for.
//!
//! Guarantee: [`SessionCodec::decode`] never panics and never waits on a header that is
//! already known to be bad; every error it returns either is an I/O error or carries the
//! NOTIFICATION to send before closing.

use std::io;

use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::codec::{BgpCodec, BgpCodecDecoderError};
use netgauze_bgp_pkt::notification::{BgpNotificationMessage, MessageHeaderError};
use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
use tokio_util::bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use super::message::MAX_MESSAGE_LEN;

/// Length of the fixed header (marker, length, type).
pub const HEADER_LEN: usize = 19;

/// Why a received byte stream could not be read as BGP messages.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The socket failed.
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    /// The peer sent a malformed message; it is answered with `notification`.
    #[error("malformed message: {reason}")]
    Malformed {
        /// The NOTIFICATION to send before closing.
        notification: BgpNotificationMessage,
        /// What was wrong, for the log and [`PeerStatus`](super::PeerStatus).
        reason: String,
    },
}

/// One received message.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// The message.
    pub message: BgpMessage,
    /// Path attributes that were malformed and skipped (RFC 7606 "treat-as-withdraw"): the
    /// UPDATE is kept, and the count reported.
    pub ignored_attributes: usize,
}

/// Checks a message header (RFC 4271 §4.1, §6.1) and returns the message length.
///
/// # Errors
/// The Message Header Error to send: Connection Not Synchronized (marker not all ones), Bad
/// Message Length (outside 19..=4096, or wrong for the type; data: the length), Bad Message
/// Type (data: the type).
pub fn check_header(header: &[u8; HEADER_LEN]) -> Result<usize, (MessageHeaderError, String)> {
    if header[..16].iter().any(|&b| b != 0xff) {
        return Err((
            MessageHeaderError::ConnectionNotSynchronized {
                value: Box::new([]),
            },
            "marker is not all ones".into(),
        ));
    }
    let len_field = u16::from_be_bytes([header[16], header[17]]);
    let len = usize::from(len_field);
    let kind = header[18];
    let bad_len = |why: &str| {
        (
            MessageHeaderError::BadMessageLength {
                value: len_field.to_be_bytes().into(),
            },
            format!("length {len} {why}"),
        )
    };
    if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&len) {
        return Err(bad_len("is outside 19..=4096"));
    }
    let ok = match kind {
        1 => len >= 29, // OPEN: version, AS, hold, id, opt-param length
        2 => len >= 23, // UPDATE: two 2-byte length fields
        3 => len >= 21, // NOTIFICATION: code, subcode
        4 => len == 19, // KEEPALIVE: header only
        5 => len == 23, // ROUTE-REFRESH: AFI, reserved, SAFI (RFC 2918)
        _ => {
            return Err((
                MessageHeaderError::BadMessageType {
                    value: Box::new([kind]),
                },
                format!("unknown message type {kind}"),
            ));
        }
    };
    if !ok {
        return Err(bad_len(&format!("is wrong for message type {kind}")));
    }
    Ok(len)
}

/// tokio-util codec for one session: header check, then netgauze.
#[derive(Debug)]
pub struct SessionCodec {
    inner: BgpCodec,
}

impl Default for SessionCodec {
    fn default() -> Self {
        // RFC 7606 handling: malformed optional attributes and non-unicast NLRI are recorded
        // and skipped instead of resetting the session (we install nothing we receive anyway).
        // Whether AS numbers are 4 octets follows the two OPENs (netgauze tracks it).
        let ctx = BgpParsingContext::new(
            true,
            Default::default(),
            Default::default(),
            false,
            false,
            false,
            false,
        );
        SessionCodec {
            inner: BgpCodec::new_from_ctx(true, ctx),
        }
    }
}

// === impl SessionCodec ===

impl Decoder for SessionCodec {
    type Item = Received;
    type Error = DecodeError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Received>, DecodeError> {
        let Some(header) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(header);
        let len = check_header(&h).map_err(|(e, reason)| DecodeError::Malformed {
            notification: BgpNotificationMessage::MessageHeaderError(e),
            reason,
        })?;
        if buf.len() < len {
            buf.reserve(len - buf.len());
            return Ok(None);
        }
        match self.inner.decode(buf) {
            Ok(Some((message, ignored))) => Ok(Some(Received {
                message,
                ignored_attributes: ignored.path_attr_errors().len(),
            })),
            Ok(None) => Ok(None),
            Err(BgpCodecDecoderError::IoError(e)) => Err(io::Error::other(e.to_string()).into()),
            Err(BgpCodecDecoderError::Incomplete(_)) => Ok(None),
            Err(BgpCodecDecoderError::BgpMessageParsingError(e)) => Err(DecodeError::Malformed {
                reason: e.to_string(),
                notification: BgpNotificationMessage::from(e),
            }),
        }
    }
}

impl Encoder<BgpMessage> for SessionCodec {
    type Error = io::Error;

    fn encode(&mut self, msg: BgpMessage, dst: &mut BytesMut) -> Result<(), io::Error> {
        self.inner
            .encode(msg, dst)
            .map_err(|e| io::Error::other(e.to_string()))
    }
}

/// Decodes every message in `data` until the first error or the end; what a fuzz target runs.
/// Never panics.
pub fn decode_all(data: &[u8]) -> (Vec<Received>, Option<DecodeError>) {
    let mut codec = SessionCodec::default();
    let mut buf = BytesMut::from(data);
    let mut out = Vec::new();
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(m)) => out.push(m),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(marker: u8, len: u16, kind: u8) -> Vec<u8> {
        let mut v = vec![marker; 16];
        v.extend_from_slice(&len.to_be_bytes());
        v.push(kind);
        v
    }

    fn malformed(bytes: &[u8]) -> BgpNotificationMessage {
        match decode_all(bytes) {
            (_, Some(DecodeError::Malformed { notification, .. })) => notification,
            other => panic!("expected a NOTIFICATION, got {other:?}"),
        }
    }

    const KEEPALIVE: [u8; 19] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x00, 0x13, 0x04,
    ];

    #[test]
    fn decode_keepalive_fixture() {
        let (msgs, err) = decode_all(&KEEPALIVE);
        assert!(err.is_none());
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].message, BgpMessage::KeepAlive);
    }

    #[test]
    fn encode_keepalive_fixture() {
        let mut buf = BytesMut::new();
        SessionCodec::default()
            .encode(BgpMessage::KeepAlive, &mut buf)
            .unwrap();
        assert_eq!(&buf[..], &KEEPALIVE);
    }

    #[test]
    fn partial_header_waits() {
        assert!(matches!(decode_all(&KEEPALIVE[..10]), (m, None) if m.is_empty()));
    }

    #[test]
    fn bad_marker_is_connection_not_synchronized() {
        assert_eq!(
            malformed(&header(0, 19, 4)),
            BgpNotificationMessage::MessageHeaderError(
                MessageHeaderError::ConnectionNotSynchronized {
                    value: Box::new([])
                }
            )
        );
    }

    #[test]
    fn bad_lengths_are_bad_message_length_with_the_length() {
        for (len, kind) in [(18, 4), (4097, 2), (65535, 2), (20, 4), (22, 1), (24, 5)] {
            assert_eq!(
                malformed(&header(0xff, len, kind)),
                BgpNotificationMessage::MessageHeaderError(MessageHeaderError::BadMessageLength {
                    value: len.to_be_bytes().into()
                }),
                "length {len} type {kind}"
            );
        }
    }

    #[test]
    fn bad_type_is_bad_message_type() {
        assert_eq!(
            malformed(&header(0xff, 19, 9)),
            BgpNotificationMessage::MessageHeaderError(MessageHeaderError::BadMessageType {
                value: Box::new([9])
            })
        );
    }

    #[test]
    fn two_messages_in_one_read() {
        let mut two = KEEPALIVE.to_vec();
        two.extend_from_slice(&KEEPALIVE);
        let (msgs, err) = decode_all(&two);
        assert!(err.is_none());
        assert_eq!(msgs.len(), 2);
    }

    proptest! {
        /// Any bytes: some messages then Ok(None) or an error, never a panic, and never a wait
        /// on a complete bad header.
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode_all(&data);
        }

        /// A valid marker with an arbitrary length/type: decided from the header alone.
        #[test]
        fn valid_marker_arbitrary_header(len in any::<u16>(), kind in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut data = header(0xff, len, kind);
            data.extend_from_slice(&body);
            let mut h = [0u8; HEADER_LEN];
            h.copy_from_slice(&data[..HEADER_LEN]);
            let (_, err) = decode_all(&data);
            if check_header(&h).is_err() {
                let is_malformed = matches!(err, Some(DecodeError::Malformed { .. }));
                prop_assert!(is_malformed);
            }
        }
    }
}
