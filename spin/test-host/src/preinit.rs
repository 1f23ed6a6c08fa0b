//! `spin-preinit`: pre-initialises a task component with its model, so that
//! an instance made per request (as Spin does) starts with the model loaded
//! and optimised instead of loading it again (hundreds of milliseconds).
//!
//! `spin-preinit <component.wasm> <out.wasm> <models dir> <interface> <model id>`
//! calls `<interface>.load("/models/<model id>")` with the model directory
//! preopened read-only at `/models`, and writes the snapshot (`wasmtime-wizer`).

use wasmtime::component::{Linker, ResourceTable};
use wasmtime::error::Context as _;
use wasmtime::Result;
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

struct State {
    table: ResourceTable,
    wasi: WasiCtx,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output, models, interface, model_id] = args.as_slice() else {
        wasmtime::bail!(
            "usage: spin-preinit <component.wasm> <out.wasm> <models dir> <interface> <model id>"
        );
    };
    let wasm = std::fs::read(input).with_context(|| format!("reading {input}"))?;
    let engine = Engine::new(&Config::new())?;
    let mut linker = Linker::<State>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    let mut wasi = WasiCtx::builder();
    wasi.inherit_stderr()
        .preopened_dir(models, "/models", FsPerms::ReadOnly)?;
    let mut store = Store::new(
        &engine,
        State {
            table: ResourceTable::new(),
            wasi: wasi.build(),
        },
    );
    // The snapshot reads the whole linear memory (several times the model).
    store.set_hostcall_fuel(usize::MAX / 2);
    let (package, name) = interface
        .rsplit_once('@')
        .map(|(iface, version)| (iface.to_string(), format!("@{version}")))
        .unwrap_or((interface.clone(), String::new()));
    let init = format!("{package}.load{name}(\"/models/{model_id}\")");
    let mut wizer = wasmtime_wizer::Wizer::new();
    wizer.init_func(init.clone());
    let (snapshot, results) = wizer
        .run_component(&mut store, &wasm, async |store, component| {
            linker.instantiate_async(store, component).await
        })
        .await
        .with_context(|| format!("pre-initialising {input} with {init}"))?;
    // `load` returns result<model-info, error>: an error is no snapshot.
    let shown = format!("{results:?}");
    wasmtime::ensure!(
        !shown.contains("Err("),
        "{init} failed in the component: {shown}"
    );
    if let Some(dir) = std::path::Path::new(output).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(output, &snapshot).with_context(|| format!("writing {output}"))?;
    println!("{output}: {} MB after {init}", snapshot.len() / 1_000_000);
    Ok(())
}
