//! The integration tests: one binary that drives the real `regctl` executable and real clients
//! (skopeo, oras, Apache htpasswd, Debian's docker-registry, HAProxy, docker, podman,
//! containerd's ctr) on loopback; the container engines in network namespaces of their own
//! (tests/clients.rs).

mod util;

mod access;
mod auth;
mod clients;
mod compat;
mod conformance;
mod deploy;
mod exit_status;
mod faults;
mod hostile;
mod images;
mod ops;
mod provision;
mod release;
mod restore;
mod rolling;
mod s3;
mod scale;
mod soak;
mod tls;
mod tokens;
mod undo;
