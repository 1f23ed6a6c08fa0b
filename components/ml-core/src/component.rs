//! What every task component's WIT adapter does the same way. The WIT records
//! are generated anew in each component crate, so the part that builds them
//! is a macro expanded there; the rest is plain Rust.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

/// The model a task component instance serves, by model directory. Hosts
/// call `load` once per instance; a pre-initialised snapshot (the Spin app)
/// starts with a model already loaded, so `load` of that directory costs
/// nothing while any other directory replaces it. Errors are formatted with
/// their causes, for the WIT error variant.
pub struct ModelSlot<T>(Mutex<Option<(String, Arc<T>)>>);

impl<T> ModelSlot<T> {
    pub const fn new() -> Self {
        Self(Mutex::new(None))
    }

    pub fn load(
        &self,
        dir: &str,
        load: impl FnOnce(&Path) -> anyhow::Result<T>,
    ) -> Result<Arc<T>, String> {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((loaded, model)) = slot.as_ref() {
            if loaded == dir {
                return Ok(model.clone());
            }
        }
        // Free the old model first: an instance has a memory limit.
        *slot = None;
        let loaded = load(Path::new(dir));
        forget_preopens();
        let model = Arc::new(loaded.map_err(|e| format!("{e:#}"))?);
        *slot = Some((dir.to_string(), model.clone()));
        Ok(model)
    }

    /// The loaded model, or an error if `load` has not succeeded yet.
    pub fn get(&self) -> Result<Arc<T>, String> {
        let slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        slot.as_ref()
            .map(|(_, model)| model.clone())
            .ok_or_else(|| "load was not called".to_string())
    }
}

/// wasi-libc keeps the preopened directories it found on first use. In a
/// snapshot pre-initialised by `load` (the Spin app), those are handles of
/// the build-time instance and mean nothing in a later one: forget them
/// once the model is read, so the next file access asks the runtime again.
fn forget_preopens() {
    #[cfg(target_os = "wasi")]
    {
        extern "C" {
            fn __wasilibc_reset_preopens();
        }
        // SAFETY: it takes libc's own lock, and no file is open here.
        unsafe { __wasilibc_reset_preopens() }
    }
}

impl<T> Default for ModelSlot<T> {
    fn default() -> Self {
        Self::new()
    }
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
    fn loads_a_directory_once_and_replaces_it_with_another() {
        let slot = ModelSlot::new();
        assert_eq!(slot.get(), Err("load was not called".into()));
        assert_eq!(
            slot.load("/m/a", |_| anyhow::bail!("no model")),
            Err("no model".into())
        );
        let dir = |d: &Path| Ok(d.display().to_string());
        assert_eq!(*slot.load("/m/a", dir).unwrap(), "/m/a");
        let again = slot.load("/m/a", |_| anyhow::bail!("loaded again"));
        assert_eq!(*again.unwrap(), "/m/a", "the same directory is kept");
        assert_eq!(*slot.load("/m/b", dir).unwrap(), "/m/b");
        assert_eq!(
            *slot.get().unwrap(),
            "/m/b",
            "another directory replaces it"
        );
    }
}
