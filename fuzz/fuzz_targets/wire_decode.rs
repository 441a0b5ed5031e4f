//! Any bytes fed to the Kademlia wire decoder give a message or a typed error; whatever
//! decodes re-encodes to bytes that decode to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netabase_core::wire::{Codec, Frame};

fuzz_target!(|data: &[u8]| {
    let codec = Codec::new(64 * 1024);
    let payload = match codec.read_frame(data) {
        Ok(Frame::Complete { payload, consumed }) => {
            assert!(consumed <= data.len());
            payload
        }
        _ => data,
    };
    if let Ok(request) = codec.decode_request(payload) {
        let frame = codec.encode_request(&request);
        let Ok(Frame::Complete { payload, .. }) = codec.read_frame(&frame) else {
            panic!("re-encoded request does not frame");
        };
        assert_eq!(codec.decode_request(payload).as_ref(), Ok(&request));
    }
    if let Ok(response) = codec.decode_response(payload) {
        let frame = codec.encode_response(&response);
        let Ok(Frame::Complete { payload, .. }) = codec.read_frame(&frame) else {
            panic!("re-encoded response does not frame");
        };
        assert_eq!(codec.decode_response(payload).as_ref(), Ok(&response));
    }
});
