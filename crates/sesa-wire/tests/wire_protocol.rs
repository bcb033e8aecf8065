//! The wire protocol: frames, limits, malformed input, and the handshake under attack.

use proptest::prelude::*;
use sesa_wire::{
    Auth, AuthError, Call, FrameDecoder, HEADER_LEN, Handshake, Header, Hello, Identity, Limits,
    MsgType, RemoteError, Reply, Secret, WireError, encode,
};

fn limits() -> Limits {
    Limits { frame_max: 1024 }
}

fn call(payload: &[u8]) -> Call<'_> {
    Call {
        call_id: 7,
        ebb: (3 << 32) | 9,
        core: 1,
        method: 2,
        payload,
    }
}

#[test]
fn every_message_round_trips_through_the_decoder() {
    let mut out = Vec::new();
    let hello = Hello {
        node: 4,
        generation: 2,
        nonce: [9; 32],
    };
    encode(MsgType::Hello, &hello, &limits(), &mut out).unwrap();
    encode(MsgType::Auth, &Auth { mac: [5; 32] }, &limits(), &mut out).unwrap();
    encode(MsgType::Call, &call(b"argument"), &limits(), &mut out).unwrap();
    let ok = Reply {
        call_id: 7,
        result: Ok(serde_bytes::Bytes::new(b"result")),
    };
    encode(MsgType::Reply, &ok, &limits(), &mut out).unwrap();
    let err: Reply<'_> = Reply {
        call_id: 8,
        result: Err(RemoteError::Refused("no".into())),
    };
    encode(MsgType::Reply, &err, &limits(), &mut out).unwrap();

    let mut d = FrameDecoder::new(limits());
    d.extend(&out);
    let f = d.next_frame().unwrap().unwrap();
    assert_eq!(f.decode::<Hello>().unwrap(), hello);
    let f = d.next_frame().unwrap().unwrap();
    assert_eq!(f.decode::<Auth>().unwrap().mac, [5; 32]);
    let f = d.next_frame().unwrap().unwrap();
    assert_eq!(f.msg_type, MsgType::Call);
    assert_eq!(f.decode::<Call<'_>>().unwrap(), call(b"argument"));
    let f = d.next_frame().unwrap().unwrap();
    assert_eq!(f.decode::<Reply<'_>>().unwrap(), ok);
    let f = d.next_frame().unwrap().unwrap();
    assert_eq!(f.decode::<Reply<'_>>().unwrap(), err);
    assert!(d.next_frame().unwrap().is_none());
    assert_eq!(d.buffered(), 0);
}

#[test]
fn frames_split_at_every_byte_boundary_still_decode() {
    let mut out = Vec::new();
    for i in 0..3u8 {
        encode(MsgType::Call, &call(&[i; 100]), &limits(), &mut out).unwrap();
    }
    let mut d = FrameDecoder::new(limits());
    let mut seen = Vec::new();
    for byte in &out {
        d.extend(std::slice::from_ref(byte));
        while let Some(f) = d.next_frame().unwrap() {
            seen.push(f.decode::<Call<'_>>().unwrap().payload[0]);
        }
    }
    assert_eq!(seen, [0, 1, 2]);
}

fn header_bytes(magic: &[u8; 4], version: u8, flags: u8, ty: u16, len: u32) -> [u8; 12] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(magic);
    h[4] = version;
    h[5] = flags;
    h[6..8].copy_from_slice(&ty.to_le_bytes());
    h[8..12].copy_from_slice(&len.to_le_bytes());
    h
}

#[test]
fn bad_headers_are_rejected_before_any_payload_is_buffered() {
    let cases = [
        (header_bytes(b"HTTP", 1, 0, 3, 4), "magic"),
        (header_bytes(b"SESA", 2, 0, 3, 4), "version"),
        (header_bytes(b"SESA", 1, 0x80, 3, 4), "flags"),
        (header_bytes(b"SESA", 1, 0, 999, 4), "type"),
        (header_bytes(b"SESA", 1, 0, 3, 1025), "size"),
        (header_bytes(b"SESA", 1, 0, 3, u32::MAX), "size"),
    ];
    for (bytes, what) in cases {
        let mut d = FrameDecoder::new(limits());
        d.extend(&bytes);
        let e = d.next_frame().unwrap_err();
        let ok = match what {
            "magic" => matches!(e, WireError::BadMagic(_)),
            "version" => matches!(e, WireError::BadVersion(2)),
            "flags" => matches!(e, WireError::BadFlags(0x80)),
            "type" => matches!(e, WireError::UnknownType(999)),
            _ => matches!(e, WireError::TooLarge { max: 1024, .. }),
        };
        assert!(ok, "{what}: {e}");
        assert_eq!(d.buffered(), HEADER_LEN, "only the header was buffered");
    }
    let ok = Header::new_checked(&header_bytes(b"SESA", 1, 0, 4, 1024), &limits()).unwrap();
    assert_eq!((ok.msg_type, ok.len), (MsgType::Reply, 1024));
}

#[test]
fn malformed_payloads_and_trailing_bytes_are_errors() {
    let mut bytes = header_bytes(b"SESA", 1, 0, 1, 3).to_vec();
    bytes.extend_from_slice(&[0xff, 0xff, 0xff]);
    let mut d = FrameDecoder::new(limits());
    d.extend(&bytes);
    let f = d.next_frame().unwrap().unwrap();
    assert!(matches!(
        f.decode::<Hello>(),
        Err(WireError::Malformed {
            msg_type: MsgType::Hello,
            ..
        })
    ));

    let mut ok = Vec::new();
    encode(MsgType::Auth, &Auth { mac: [1; 32] }, &limits(), &mut ok).unwrap();
    ok.push(0); // one byte too many in the payload
    let len = (ok.len() - HEADER_LEN) as u32;
    ok[8..12].copy_from_slice(&len.to_le_bytes());
    let mut d = FrameDecoder::new(limits());
    d.extend(&ok);
    let f = d.next_frame().unwrap().unwrap();
    assert!(matches!(
        f.decode::<Auth>(),
        Err(WireError::Malformed { .. })
    ));
}

#[test]
fn encoding_past_the_limit_fails_and_leaves_the_buffer_intact() {
    let mut out = vec![1, 2, 3];
    let big = vec![0u8; 2000];
    let e = encode(MsgType::Call, &call(&big), &limits(), &mut out).unwrap_err();
    assert!(matches!(e, WireError::Encode { .. }));
    assert_eq!(out, [1, 2, 3]);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(chunks in proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
        let mut d = FrameDecoder::new(limits());
        'feed: for chunk in chunks {
            d.extend(&chunk);
            loop {
                match d.next_frame() {
                    Ok(Some(f)) => {
                        let _ = f.decode::<Hello>();
                        let _ = f.decode::<Call<'_>>();
                        let _ = f.decode::<Reply<'_>>();
                    }
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
    }

    /// Valid frames with random bytes overwritten: reaches the length, type and payload
    /// checks that random bytes alone almost never get past the magic for.
    #[test]
    fn corrupted_frames_never_panic_the_decoder(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..5),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut out = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            if i % 2 == 0 {
                encode(MsgType::Call, &call(p), &limits(), &mut out).unwrap();
            } else {
                let r = Reply { call_id: i as u64, result: Ok(serde_bytes::Bytes::new(p)) };
                encode(MsgType::Reply, &r, &limits(), &mut out).unwrap();
            }
        }
        for (at, byte) in flips {
            let i = at.index(out.len());
            out[i] = byte;
        }
        let split = cut.index(out.len() + 1);
        let mut d = FrameDecoder::new(limits());
        for part in [&out[..split], &out[split..]] {
            d.extend(part);
            loop {
                match d.next_frame() {
                    Ok(Some(f)) => {
                        let _ = f.decode::<Call<'_>>();
                        let _ = f.decode::<Reply<'_>>();
                        let _ = f.decode::<Hello>();
                        let _ = f.decode::<Auth>();
                    }
                    Ok(None) => break,
                    Err(_) => return Ok(()),
                }
            }
        }
    }

    #[test]
    fn calls_round_trip(id in any::<u64>(), ebb in any::<u64>(), core in any::<u32>(),
                        method in any::<u16>(), payload in proptest::collection::vec(any::<u8>(), 0..900)) {
        let msg = Call { call_id: id, ebb, core, method, payload: &payload };
        let mut out = Vec::new();
        encode(MsgType::Call, &msg, &limits(), &mut out).unwrap();
        let mut d = FrameDecoder::new(limits());
        d.extend(&out);
        let f = d.next_frame().unwrap().unwrap();
        prop_assert_eq!(f.decode::<Call<'_>>().unwrap(), msg);
    }
}

fn id(node: u32) -> Identity {
    Identity {
        node,
        generation: 1,
    }
}

#[test]
fn nodes_sharing_the_secret_authenticate_each_other() {
    let s = Secret::from_bytes([3; 32]);
    let mut a = Handshake::new(id(1), [10; 32], s.clone());
    let mut b = Handshake::new(id(2), [20; 32], s);
    let to_b = a.on_hello(&b.hello()).unwrap();
    let to_a = b.on_hello(&a.hello()).unwrap();
    assert_eq!(a.on_auth(&to_a).unwrap(), id(2));
    assert_eq!(b.on_auth(&to_b).unwrap(), id(1));
}

#[test]
fn a_node_without_the_secret_is_refused() {
    let mut a = Handshake::new(id(1), [10; 32], Secret::from_bytes([3; 32]));
    let mut intruder = Handshake::new(id(2), [20; 32], Secret::from_bytes([4; 32]));
    a.on_hello(&intruder.hello()).unwrap();
    let forged = intruder.on_hello(&a.hello()).unwrap();
    assert_eq!(a.on_auth(&forged), Err(AuthError::BadMac));
}

#[test]
fn reflected_and_replayed_proofs_do_not_verify() {
    let s = Secret::from_bytes([3; 32]);
    // Reflection: an attacker sends A's own nonce back in its Hello, then returns A's
    // Auth to A. The MAC binds the sender, so it does not verify.
    let mut a = Handshake::new(id(1), [10; 32], s.clone());
    let attacker_hello = Hello {
        node: 2,
        generation: 1,
        nonce: [10; 32],
    };
    let a_auth = a.on_hello(&attacker_hello).unwrap();
    assert_eq!(a.on_auth(&a_auth), Err(AuthError::BadMac));

    // Replay: a proof recorded from an old session does not answer a new nonce.
    let mut b_old = Handshake::new(id(2), [20; 32], s.clone());
    let mut a_old = Handshake::new(id(1), [10; 32], s.clone());
    a_old.on_hello(&b_old.hello()).unwrap();
    let recorded = b_old.on_hello(&a_old.hello()).unwrap();
    let mut a_new = Handshake::new(id(1), [11; 32], s);
    a_new.on_hello(&b_old.hello()).unwrap();
    assert_eq!(a_new.on_auth(&recorded), Err(AuthError::BadMac));
}

#[test]
fn handshake_protocol_violations_are_errors() {
    let s = Secret::from_bytes([3; 32]);
    let mut a = Handshake::new(id(1), [10; 32], s.clone());
    let b = Handshake::new(id(2), [20; 32], s.clone());
    assert!(matches!(
        a.on_auth(&Auth { mac: [0; 32] }),
        Err(AuthError::OutOfOrder(_))
    ));
    let me_again = Handshake::new(id(1), [30; 32], s);
    assert_eq!(a.on_hello(&me_again.hello()), Err(AuthError::SameNode(1)));
    a.on_hello(&b.hello()).unwrap();
    assert!(matches!(
        a.on_hello(&b.hello()),
        Err(AuthError::OutOfOrder(_))
    ));
}

#[test]
fn secrets_round_trip_through_hex_and_never_print() {
    let s = Secret::from_bytes([0xab; 32]);
    let hex = s.to_hex();
    assert_eq!(hex.len(), 64);
    assert_eq!(Secret::from_hex(&hex).unwrap().to_hex(), hex);
    assert!(Secret::from_hex("zz").is_none());
    assert!(Secret::from_hex(&"g".repeat(64)).is_none());
    assert_eq!(format!("{s:?}"), "Secret(..)");
}
