//! The Aurora control plane (filled by the control-plane issue).
