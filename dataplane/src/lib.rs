//! The Aurora data plane.
