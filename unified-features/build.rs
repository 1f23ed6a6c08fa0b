// Without a build script cargo would not apply the build-dependencies'
// features listed in Cargo.toml.
fn main() {}
