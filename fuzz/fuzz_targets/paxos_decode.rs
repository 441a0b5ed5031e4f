//! Any bytes fed to the consensus message decoder give a message or a typed error;
//! whatever decodes re-encodes to bytes that decode to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netabase_core::consensus::Envelope;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = Envelope::decode(data) {
        let bytes = envelope.encode().expect("a decoded message re-encodes");
        assert_eq!(Envelope::decode(&bytes).as_ref(), Ok(&envelope));
    }
});
