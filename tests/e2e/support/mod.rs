//! Shared test helpers: spawning `aurora` processes, upstream fakes, waiting with deadlines.
//! Not every test module uses every helper, hence the `dead_code` allowance.

#![allow(dead_code)]

pub mod controlplane;
pub mod dataplane;
pub mod postgres;
pub mod process;
pub mod raw_http;
pub mod wait;
