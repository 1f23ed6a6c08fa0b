//! Which tract kernels this build runs, and the one kernel the ML core adds
//! to them for wasm (see [`wasm_tile`]).

#[cfg(all(feature = "tract", target_arch = "wasm32", target_feature = "simd128"))]
pub mod wasm_tile;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelReport {
    /// The instruction set tract detected.
    pub isa: String,
    /// Matrix-multiply kernels runnable here, by name.
    pub matmul_kernels: Vec<String>,
    /// Dispatch tiers, highest precedence first.
    pub tiers: Vec<String>,
}

/// Reports the kernels tract would dispatch to. tract registers them through
/// link-time constructors: where those did not run, only generic kernels show.
#[cfg(feature = "tract")]
pub fn report() -> KernelReport {
    use tract_onnx::prelude::tract_linalg;
    let isa = tract_linalg::isa::native();
    KernelReport {
        isa: format!("{isa:?}"),
        matmul_kernels: tract_linalg::mmm_routines::runnable_for(&isa)
            .iter()
            .map(|k| k.name().to_string())
            .collect(),
        tiers: tract_linalg::mmm_tiers::for_isa(&isa)
            .iter()
            .map(|t| t.name.to_string())
            .collect(),
    }
}

/// A build without tract runs no kernels of its own: the host runs its graphs.
#[cfg(not(feature = "tract"))]
pub fn report() -> KernelReport {
    KernelReport {
        isa: "none: the host runs the graphs through wasi:nn".into(),
        matmul_kernels: Vec::new(),
        tiers: Vec::new(),
    }
}
