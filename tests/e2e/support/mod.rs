//! Shared test helpers: spawning `aurora` processes, upstream fakes, waiting with deadlines.
//! Not every test module uses every helper, hence the `dead_code` allowance.

#![allow(dead_code)]

pub mod config_stream;
pub mod controlplane;
pub mod dataplane;
pub mod egress_proxy;
pub mod postgres;
pub mod process;
pub mod raw_http;
pub mod tls_upstream;
pub mod wait;
