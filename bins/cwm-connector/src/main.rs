//! `cwm-connector`: STUB, to be written.
#![forbid(unsafe_code)]

fn main() {}
