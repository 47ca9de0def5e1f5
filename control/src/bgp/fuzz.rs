//! Fuzzing entry point for the BGP input path, kept next to the code it exercises (linkerd's
//! `transport-header` pattern). Compiled only for tests and under `cargo fuzz`.
//!
//! [`decode_and_judge`] is the body of `fuzz/fuzz_targets/bgp_decode.rs` and of the "any
//! bytes" proptest below. It feeds arbitrary bytes through exactly what a session does with
//! received data, and panics (the fuzzer's signal) if the module's contract breaks:
//!
//! - [`SessionCodec`] returns messages and then either waits or fails with a NOTIFICATION;
//!   never a panic, and every NOTIFICATION it asks for encodes;
//! - every decoded message re-encodes, and OPENs and UPDATEs are judged
//!   ([`check_open`], [`check_update`], [`prefix_counts`]) without a panic;
//! - the state machine, driven through a session with those messages as its events, keeps
//!   its invariants: a NOTIFICATION only on a live connection and always followed by closing
//!   it, and Established only after OpenConfirm.

// `cargo fuzz` passes `--cfg fuzzing`, which this crate's manifest does not declare.
#![allow(unexpected_cfgs)]
#![cfg(any(test, fuzzing))]

use std::hint::black_box;
use std::time::Duration;

use netgauze_bgp_pkt::BgpMessage;

use super::codec::{DecodeError, SessionCodec};
use super::config::PeerConfig;
use super::fsm::{Action, Event, Fsm, State};
use super::message::{check_open, check_update, encoded_len, notification_codes, prefix_counts};
use tokio_util::bytes::BytesMut;
use tokio_util::codec::Decoder;

/// Decodes `data` as a session's input, judges every message, and runs the state machine over
/// them; returns the state it ends in. Panics if the contract in the module docs is broken.
pub fn decode_and_judge(data: &[u8]) -> State {
    let cfg = PeerConfig {
        hold_time: Duration::from_secs(9),
        ..PeerConfig::new(
            64513,
            64512,
            "192.0.2.1".parse().expect("literal"),
            "192.0.2.2".parse().expect("literal"),
        )
    };
    let mut fsm = Fsm::new(cfg.clone(), 1);
    drive(&mut fsm, Event::Start);
    drive(&mut fsm, Event::TcpConnected);

    let mut codec = SessionCodec::default();
    let mut buf = BytesMut::from(data);
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(r)) => {
                let len = encoded_len(&r.message);
                assert!(len != usize::MAX, "a decoded message must re-encode");
                let event = match r.message {
                    BgpMessage::Open(o) => {
                        let _ = black_box(check_open(&cfg, &o));
                        Event::Open(Box::new(o))
                    }
                    BgpMessage::Update(u) => {
                        let _ = black_box(check_update(&u));
                        black_box(prefix_counts(&u));
                        Event::Update(Box::new(u))
                    }
                    BgpMessage::Notification(n) => {
                        black_box(notification_codes(&n));
                        Event::Notification
                    }
                    BgpMessage::KeepAlive => Event::Keepalive,
                    BgpMessage::RouteRefresh(rr) => Event::RouteRefresh(rr.address_type()),
                };
                drive(&mut fsm, event);
                if fsm.state() == State::Idle {
                    // The session ended; a new connection would get a fresh codec.
                    drive(&mut fsm, Event::Timer(super::fsm::Timer::IdleHold));
                    drive(&mut fsm, Event::TcpConnected);
                    codec = SessionCodec::default();
                }
            }
            Ok(None) => return fsm.state(),
            Err(DecodeError::Malformed { notification, .. }) => {
                let wire = BgpMessage::Notification(notification.clone());
                assert!(
                    encoded_len(&wire) != usize::MAX,
                    "the NOTIFICATION must encode"
                );
                drive(&mut fsm, Event::MessageError(notification));
                return fsm.state();
            }
            Err(DecodeError::Io(e)) => panic!("no I/O happens here: {e}"),
        }
    }
}

fn drive(fsm: &mut Fsm, event: Event) {
    let before = fsm.state();
    let actions = fsm.fsm_event(event);
    let after = fsm.state();
    for (i, a) in actions.iter().enumerate() {
        if let Action::SendNotification(_) = a {
            assert!(before.is_connected(), "NOTIFICATION without a connection");
            assert_eq!(
                actions.get(i + 1),
                Some(&Action::Close),
                "close after NOTIFICATION"
            );
        }
    }
    if after == State::Established && before != State::Established {
        assert_eq!(before, State::OpenConfirm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn handshake_bytes_reach_established() {
        // A peer's OPEN (AS 64512, hold 9, id 192.0.2.1, no parameters) and a KEEPALIVE.
        let mut data = vec![0xff; 16];
        data.extend_from_slice(&[0, 29, 1, 4, 0xfc, 0x00, 0, 9, 192, 0, 2, 1, 0]);
        data.extend_from_slice(&[0xff; 16]);
        data.extend_from_slice(&[0, 19, 4]);
        assert_eq!(decode_and_judge(&data), State::Established);
        // The same OPEN with a bad marker in front: header error, back to Idle.
        let mut bad = vec![0u8; 19];
        bad.extend_from_slice(&data);
        assert_eq!(decode_and_judge(&bad), State::Idle);
    }

    proptest! {
        #[test]
        fn any_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_and_judge(&data);
        }

        /// Valid headers with arbitrary bodies reach the message parsers.
        #[test]
        fn framed_bodies(kind in 1u8..=5, body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut data = vec![0xff; 16];
            let len = u16::try_from(19 + body.len()).unwrap_or(u16::MAX);
            data.extend_from_slice(&len.to_be_bytes());
            data.push(kind);
            data.extend_from_slice(&body);
            let _ = decode_and_judge(&data);
        }
    }
}
