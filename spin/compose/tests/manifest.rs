//! spin.toml is what Spin 4.1+ loads: its invariants, checked against the
//! built router component.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use toml::Value;

/// From cargo at run time: a shared target directory may hold this test as
/// built by a clone at another path.
fn root() -> PathBuf {
    Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo test")).join("../..")
}

fn manifest() -> Value {
    let text = std::fs::read_to_string(root().join("spin.toml")).expect("spin.toml at the root");
    toml::from_str(&text).expect("spin.toml is valid TOML")
}

/// `<target>/wasm32-wasip2/release`, beside this test binary's `<target>/release`.
fn wasm_release_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let release = exe
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "release"))
        .expect("tests run from <target>/release")
        .to_path_buf();
    release.parent().unwrap().join("wasm32-wasip2/release")
}

#[test]
fn spin_toml_routes_everything_to_the_router() {
    let m = manifest();
    assert_eq!(m["spin_manifest_version"].as_integer(), Some(2));
    let triggers = m["trigger"]["http"].as_array().expect("[[trigger.http]]");
    assert_eq!(triggers.len(), 1, "one HTTP trigger");
    assert_eq!(triggers[0]["route"].as_str(), Some("/..."));
    assert_eq!(triggers[0]["component"].as_str(), Some("router"));
}

#[test]
fn every_dependency_is_a_router_import_and_a_task_component() {
    let m = manifest();
    let components = m["component"].as_table().unwrap();
    let router = &components["router"];
    let deps = router["dependencies"]
        .as_table()
        .expect("router dependencies");

    let router_wasm = wasm_release_dir().join("spin_router.wasm");
    let bytes = std::fs::read(&router_wasm)
        .unwrap_or_else(|e| panic!("{}: {e} (build the router first)", router_wasm.display()));
    let task_imports: BTreeSet<String> = spin_compose::top_level_names(&bytes)
        .0
        .into_iter()
        .filter(|n| !n.starts_with("wasi:") && !n.starts_with("spin:"))
        .filter(|n| n != spin_compose::TYPES_INTERFACE)
        .collect();
    let keys: BTreeSet<String> = deps.keys().cloned().collect();
    assert_eq!(
        keys, task_imports,
        "dependency keys = the router's task imports"
    );

    for (key, dep) in deps {
        let name = dep["component"]
            .as_str()
            .unwrap_or_else(|| panic!("{key}: component"));
        let task = components
            .get(name)
            .unwrap_or_else(|| panic!("{key}: no component [{name}]"));
        let inherited = dep["inherit_configuration"]
            .as_array()
            .expect("inherit_configuration");
        assert!(
            inherited.iter().any(|v| v.as_str() == Some("files")),
            "{key}: the task must inherit the router's files"
        );
        // Spin refuses runtime configuration on a component used as a dependency.
        for forbidden in [
            "files",
            "variables",
            "key_value_stores",
            "sqlite_databases",
            "allowed_outbound_hosts",
            "environment",
        ] {
            assert!(
                task.get(forbidden).is_none(),
                "dependency [{name}] declares [{forbidden}]"
            );
        }
        let source = task["source"].as_str().unwrap();
        assert!(source.ends_with(".wasm"), "{name}: {source}");
        assert!(task.get("build").is_some(), "{name} has no build section");
    }
}

#[test]
fn models_store_and_variables_are_on_the_router() {
    let m = manifest();
    let router = &m["component"]["router"];
    let files = router["files"].as_array().expect("router files");
    assert!(
        files
            .iter()
            .any(|f| f["destination"].as_str() == Some("/models")),
        "the model files are mounted at /models: {files:?}"
    );
    let stores = router["key_value_stores"]
        .as_array()
        .expect("key_value_stores");
    assert!(stores.iter().any(|s| s.as_str() == Some("default")));
    assert!(router.get("build").is_some(), "router has no build section");

    let declared = m["variables"].as_table().expect("[variables]");
    for (name, value) in router["variables"].as_table().expect("router variables") {
        assert_eq!(
            value.as_str(),
            Some(format!("{{{{ {name} }}}}").as_str()),
            "{name} comes from the app variable"
        );
        assert!(declared.contains_key(name), "undeclared variable {name}");
        // Spin variable names: lowercase letters, digits and underscores.
        assert!(name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
    }
}
