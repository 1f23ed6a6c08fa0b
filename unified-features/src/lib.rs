//! No code: this crate's dependencies pin the features that a build of every
//! native crate unifies, so that `cargo build -p inference-host` (what
//! `cargo xtask serve` builds) compiles exactly what the full build would,
//! and the tests reuse it. `cargo hakari generate` writes its Cargo.toml
//! (see `.config/hakari.toml`); `cargo xtask test` fails when it is stale.
