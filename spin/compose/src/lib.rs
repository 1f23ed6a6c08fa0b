//! Ahead-of-time composition of the Spin app: the router's task imports are
//! satisfied by the task components' exports, as Spin's component
//! dependencies do when it loads `spin.toml`. The result imports only WASI
//! and Spin's key-value and variables interfaces, and exports
//! `wasi:http/handler@0.3.0`.

use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use wac_graph::{types::Package, CompositionGraph, EncodeOptions};
use wasmparser::Payload;

/// The task components, by the file name `cargo build` gives each.
pub const TASKS: [&str; 4] = es_wire::COMPONENT_FILES;

/// The interface of the records the tasks share: type definitions only (no
/// function, nothing a host provides), which composition leaves imported.
pub const TYPES_INTERFACE: &str = "edge:inference-types/types@0.1.0";

/// Plugs `tasks` into `router` and encodes the composed component.
pub fn compose(router: &Path, tasks: &[PathBuf]) -> Result<Vec<u8>> {
    let mut graph = CompositionGraph::new();
    let load = |graph: &mut CompositionGraph, name: &str, path: &Path| {
        let package = Package::from_file(name, None, path, graph.types_mut())
            .with_context(|| format!("reading {}", path.display()))?;
        graph
            .register_package(package)
            .with_context(|| format!("registering {}", path.display()))
    };
    let socket = load(&mut graph, "edge:router", router)?;
    let mut plugs = Vec::new();
    for (i, task) in tasks.iter().enumerate() {
        plugs.push(load(&mut graph, &format!("edge:task{i}"), task)?);
    }
    wac_graph::plug(&mut graph, plugs, socket).context("plugging the tasks into the router")?;
    graph
        .encode(EncodeOptions::default())
        .context("encoding the composed app")
}

/// Composes the built router with the built tasks from `<target>/wasm32-wasip2/release`
/// (or `tasks_dir`, e.g. for pre-initialised tasks) into `out`.
pub fn compose_files(release: &Path, tasks_dir: Option<&Path>, out: &Path) -> Result<()> {
    let router = release.join("spin_router.wasm");
    let tasks: Vec<PathBuf> = TASKS
        .iter()
        .map(|t| {
            let preferred = tasks_dir.map(|d| d.join(t));
            match preferred {
                Some(p) if p.exists() => p,
                _ => release.join(t),
            }
        })
        .collect();
    let bytes = compose(&router, &tasks)?;
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(out, bytes).with_context(|| format!("writing {}", out.display()))
}

/// The names a component imports and exports at its top level (not those of
/// the components and modules nested in it).
pub fn top_level_names(bytes: &[u8]) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut imports, mut exports) = (BTreeSet::new(), BTreeSet::new());
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload {
            Ok(Payload::ModuleSection { .. } | Payload::ComponentSection { .. }) => depth += 1,
            Ok(Payload::End(_)) => depth = depth.saturating_sub(1),
            Ok(Payload::ComponentImportSection(section)) if depth == 0 => {
                imports.extend(
                    section
                        .into_iter()
                        .flatten()
                        .map(|i| i.name.name.to_string()),
                );
            }
            Ok(Payload::ComponentExportSection(section)) if depth == 0 => {
                exports.extend(
                    section
                        .into_iter()
                        .flatten()
                        .map(|e| e.name.name.to_string()),
                );
            }
            _ => {}
        }
    }
    (imports, exports)
}
