//! The `baton.v1` wire contract: message types and gRPC stubs generated from
//! `proto/` at build time, and the descriptor set served by reflection.
//!
//! Kept slim on purpose: the router, the probe, the tests and the load
//! generator all depend on it, and it depends on nothing of Baton's.

#![forbid(unsafe_code)]

pub mod codec;

/// `baton.v1`: the product contract (SPEC §5).
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("baton.v1");
}

/// `baton.bench.v1`: a bare echo service, the floor the load generator
/// measures `RequestHandoff` against.
pub mod bench {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("baton.bench.v1");
}

/// Encoded `FileDescriptorSet` of every proto above, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("baton_descriptor");
