//! `spin-compose <target-dir>`: writes `<target>/spin/app.wasm` from the
//! router and task components built for wasm32-wasip2. Pre-initialised tasks
//! in `<target>/spin/preinit/` are used instead of the plain ones when present.

use anyhow::{Context, Result};
use std::path::PathBuf;

fn main() -> Result<()> {
    let target = PathBuf::from(
        std::env::args_os()
            .nth(1)
            .context("usage: spin-compose <cargo target dir>")?,
    );
    let release = target.join("wasm32-wasip2/release");
    let out = target.join("spin/app.wasm");
    spin_compose::compose_files(&release, Some(&target.join("spin/preinit")), &out)?;
    println!("{}", out.display());
    Ok(())
}
