//! What every task component's WIT adapter does the same way. The WIT records
//! are generated anew in each component crate, so the part that builds them
//! is a macro expanded there; the rest is plain Rust.

use std::sync::OnceLock;

/// Loads the instance's one model into `cell` on the first call and returns
/// it on every call. The error is formatted with its causes, for the WIT
/// error variant.
pub fn load_once<T>(
    cell: &'static OnceLock<T>,
    load: impl FnOnce() -> anyhow::Result<T>,
) -> Result<&'static T, String> {
    if let Some(model) = cell.get() {
        return Ok(model);
    }
    let model = load().map_err(|e| format!("{e:#}"))?;
    Ok(cell.get_or_init(|| model))
}

/// Defines `kernel_report()` and `model_info(..)` in a task component, building
/// the `KernelReport` and `ModelInfo` records its WIT bindings generated.
#[macro_export]
macro_rules! wit_records {
    () => {
        fn kernel_report() -> KernelReport {
            let r = $crate::kernels::report();
            KernelReport {
                isa: r.isa,
                matmul_kernels: r.matmul_kernels,
                tiers: r.tiers,
            }
        }

        fn model_info(
            model_id: &str,
            task: &str,
            max_sequence_length: usize,
            dimensions: usize,
        ) -> ModelInfo {
            ModelInfo {
                model_id: model_id.to_string(),
                task: task.to_string(),
                max_sequence_length: max_sequence_length as u32,
                dimensions: dimensions as u32,
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_once_and_keeps_the_first_model() {
        static CELL: OnceLock<u32> = OnceLock::new();
        assert_eq!(
            load_once(&CELL, || anyhow::bail!("no model")),
            Err("no model".into())
        );
        assert_eq!(load_once(&CELL, || Ok(1)), Ok(&1));
        assert_eq!(load_once(&CELL, || Ok(2)), Ok(&1), "loaded once");
    }
}
