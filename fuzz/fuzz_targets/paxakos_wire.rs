//! Any bytes fed to the paxakos engine's message decoders give a message or a typed
//! error; whatever decodes re-encodes to bytes that decode to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netabase_paxakos::wire::{Request, Response};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = Request::decode(data) {
        let bytes = request.encode().expect("a decoded request re-encodes");
        assert_eq!(Request::decode(&bytes), Ok(request));
    }
    if let Ok(response) = Response::decode(data) {
        let bytes = response.encode().expect("a decoded answer re-encodes");
        assert_eq!(Response::decode(&bytes), Ok(response));
    }
});
