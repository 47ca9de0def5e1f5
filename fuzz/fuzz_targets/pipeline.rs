//! The whole per-packet pipeline on arbitrary input: byte 0 picks the headroom and the port,
//! then a sequence of length-prefixed frames goes through one `Pipeline` over a small fixed
//! service set (every mode, both families, a tiny conntrack table). The body lives in the
//! library (`sluice_dataplane::pipeline::fuzz`, compiled under `cfg(fuzzing)`) so that the
//! unit proptests run exactly the same checks: no panic, no rewrite failure, untouched frames
//! for exception/redirect/drop, valid checksums after every rewrite, the encapsulated packet
//! carried byte for byte, and NAT answered by its backend un-NATed back to the client.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sluice_dataplane::pipeline::fuzz::process_frames(data);
});
