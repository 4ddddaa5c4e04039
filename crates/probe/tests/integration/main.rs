//! Integration tests of baton-probe against real servers on loopback: an
//! HTTP bot, a `grpc.health.v1` bot, a stand-in router receiving the
//! report stream, and the built binary itself.

mod active;
mod binary;
mod passive;
mod reporting;
mod support;
