//! A peer's bytes, as the messenger reads them: in pieces of any size, through
//! `FrameDecoder`; every frame decoded as its message type; handshake messages fed to a
//! `Handshake`. Nothing may panic, and no announced length may make the decoder buffer
//! more than its limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sesa_wire::{
    Auth, Call, Data, FrameDecoder, Gossip, Handshake, Hello, Identity, Limits, MsgType, Reply,
    Secret,
};

/// The largest payload accepted here: small, so that the limit is reached.
const FRAME_MAX: u32 = 1 << 12;

fuzz_target!(|data: &[u8]| {
    // The first byte says how the stream is cut into reads.
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let piece = usize::from(cut % 64) + 1;
    let mut decoder = FrameDecoder::new(Limits {
        frame_max: FRAME_MAX,
    });
    let mut handshake = Handshake::new(
        Identity {
            node: 1,
            generation: 1,
        },
        [7; 32],
        Secret::from_bytes([9; 32]),
    );
    for chunk in stream.chunks(piece) {
        decoder.extend(chunk);
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                // The messenger closes the connection.
                Err(_) => return,
            };
            assert!(frame.payload.len() <= FRAME_MAX as usize);
            match frame.msg_type {
                MsgType::Hello => {
                    if let Ok(hello) = frame.decode::<Hello>() {
                        let _ = handshake.on_hello(&hello);
                    }
                }
                MsgType::Auth => {
                    if let Ok(auth) = frame.decode::<Auth>() {
                        let _ = handshake.on_auth(&auth);
                    }
                }
                MsgType::Call => {
                    let _ = frame.decode::<Call<'_>>();
                }
                MsgType::Reply => {
                    let _ = frame.decode::<Reply<'_>>();
                }
                MsgType::Gossip => {
                    let _ = frame.decode::<Gossip<'_>>();
                }
                MsgType::Data => {
                    let _ = frame.decode::<Data<'_>>();
                }
                _ => {}
            }
        }
        assert!(decoder.buffered() <= 12 + FRAME_MAX as usize + piece);
    }
});
