//! The BGP session's input path on arbitrary bytes: framing and header checks, netgauze's
//! message decoder, the OPEN/UPDATE judges and the state machine. The body lives in the library
//! (`sluice_control::bgp::fuzz`, compiled under `cfg(fuzzing)`) so that the proptests run
//! exactly the same checks.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sluice_control::bgp::fuzz::decode_and_judge(data);
});
