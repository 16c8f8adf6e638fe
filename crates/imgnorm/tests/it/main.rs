//! The one integration-test binary: real processes, temp dirs, loopback.
mod distributed;
