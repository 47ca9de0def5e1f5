//! `parse_frame` on arbitrary bytes, then every getter of every layer it reports, and every
//! header view / `Repr` round trip on the raw bytes. The body lives in the library
//! (`sluice_dataplane::wire::fuzz`, compiled under `cfg(fuzzing)`) so that the unit tests and
//! proptests run exactly the same checks.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sluice_dataplane::wire::fuzz::parse_frame_and_getters(data);
});
