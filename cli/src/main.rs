//! The `aurora` binary.
fn main() {}
