//! The registry client and workload of `regctl-bench`, as a library: the benchmark binary uses
//! them, and so do the integration tests' soak (`tests/soak.rs`), so that every figure and every
//! correctness check comes from one client that verifies each byte it reads.
//!
//! - [`workload`]: deterministic random blobs and OCI images;
//! - [`client`]: push and pull over HTTP/1.1 with Basic auth, every read checked against its
//!   digest;
//! - [`soak`]: many clients pushing and pulling at once for a bounded time.

pub mod client;
pub mod soak;
pub mod workload;
