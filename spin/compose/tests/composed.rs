//! The composed app (`<target>/spin/app.wasm`) needs nothing but WASI and
//! Spin's key-value and variables interfaces, and exports the WASI 0.3 HTTP
//! handler: the task imports are all satisfied inside it.

use std::path::PathBuf;

fn app() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let release = exe
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "release"))
        .expect("tests run from <target>/release")
        .to_path_buf();
    release.parent().unwrap().join("spin/app.wasm")
}

#[test]
fn composed_app_imports_only_wasi_and_spin_and_exports_the_handler() {
    let path = app();
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask spin`)", path.display()));
    let (imports, exports) = spin_compose::top_level_names(&bytes);
    assert!(!imports.is_empty());
    for name in &imports {
        assert!(
            name.starts_with("wasi:")
                || name == spin_compose::TYPES_INTERFACE
                || name == "spin:key-value/key-value@3.0.0"
                || name == "spin:variables/variables@3.0.0",
            "unexpected import {name}"
        );
    }
    assert!(
        imports.contains("spin:key-value/key-value@3.0.0"),
        "{imports:?}"
    );
    assert!(
        imports.contains("spin:variables/variables@3.0.0"),
        "{imports:?}"
    );

    assert_eq!(
        exports.into_iter().collect::<Vec<_>>(),
        ["wasi:http/handler@0.3.0"]
    );
}
