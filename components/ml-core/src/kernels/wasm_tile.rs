//! tract's 8x8 wasm matrix kernel, with an inner loop shaped for wasmtime.
//!
//! wasmtime bounds a call's time with epoch interruption: every loop header
//! checks the epoch and, when it has passed, calls into the runtime. That
//! call clobbers every vector register, so Cranelift keeps values that live
//! across the loop, the kernel's sixteen accumulators, in stack slots, and
//! loads and stores each of them on every step of `k`. tract's own 8x8 loop
//! does one step an iteration and pays that traffic for each of its 64
//! products.
//!
//! This kernel is tract's `wasm_f32_8x8` (same tile, same packing, every
//! fused operation still tract's) with only the product replaced: two steps
//! of `k` an iteration, one accumulator at a time, so each is loaded and
//! stored once for 128 products instead of 64. Measured on an AVX2 AMD EPYC
//! in a wasmtime module with epoch interruption on: 12.5-13.5 GMAC/s against
//! 10.1-10.9 for tract's loop (without epochs: 14.3 against 13.8); in the
//! server's sandbox, +18% docs/s at one input and +33% at batches of 32.
//! Longer loops lose: LLVM hoists their loads, and those spill too.
//!
//! The product is computed into a tile of our own and handed to tract's
//! kernel as a `LoadTile` (or, if the tile already held values, an
//! `AddUnicast`, which sums the same terms in another order).

use tract_onnx::prelude::tract_linalg::isa::Arch;
use tract_onnx::prelude::tract_linalg::mmm::{DynKernel, FusedKerSpec, OutputStoreKer, Query};
use tract_onnx::prelude::tract_linalg::mmm_routines::MmmRoutine;
use tract_onnx::prelude::tract_linalg::mmm_tiers::MmmTier;
use tract_onnx::prelude::tract_linalg::wasm::wasm_f32_8x8;
use tract_onnx::prelude::{tract_linalg, DatumType};

use std::arch::wasm32::*;
use std::sync::LazyLock;

/// The kernel's name. tract sorts kernels by name and, where two are equally
/// good for a graph whose sizes are not known until it runs, takes the last:
/// this name sorts after `wasm_f32_8x8` so that such graphs (an encoder's
/// batch and sequence) get this kernel too.
pub const NAME: &str = "wasm_f32_8x8_k2";

/// The dispatch tier that prefers it where a matrix product's size is known.
pub const TIER: &str = "ml-core-wasm";

static KERNEL: LazyLock<DynKernel<8, 8, f32>> = LazyLock::new(|| {
    let mut kernel = wasm_f32_8x8.clone();
    kernel.name = NAME.into();
    kernel.kernel = run;
    kernel
});

inventory::submit! {
    MmmRoutine { make: || KERNEL.mmm() }
}

inventory::submit! {
    MmmTier {
        arch: Some(Arch::Wasm32Simd128),
        // Above tract's `wasm-simd128` (1), which still answers every
        // query this tier leaves alone.
        precedence: 2,
        name: TIER,
        applies: |_| true,
        preferred,
    }
}

/// Matrix products of f32 with more than one column; tract's tier keeps
/// matrix-vector products (its GEMV kernels) and every other type.
fn preferred(
    _isa: &tract_linalg::isa::IsaSet,
    accumulator: DatumType,
    query: &Query,
    _suitable: &[tract_linalg::mmm::Suitable],
) -> Option<&'static str> {
    (accumulator == DatumType::F32 && query.n != Some(1)).then_some(NAME)
}

/// The most operations tract hands a kernel at once here; longer lists go
/// to tract's kernel unchanged.
const MAX_SPECS: usize = 16;

/// Runs tract's kernel on `specs` with each f32 product computed here first.
unsafe fn run(specs: &[FusedKerSpec<f32>]) -> isize {
    let inner = wasm_f32_8x8.kernel;
    let products = specs
        .iter()
        .filter(|s| matches!(s, FusedKerSpec::AddMatMul { packing: 0, .. }))
        .count();
    if products != 1 || specs.len() > MAX_SPECS {
        return unsafe { inner(specs) };
    }
    // Outlives the loop: `own` points into it until tract's kernel returns.
    let mut tile = None;
    let mut own = [FusedKerSpec::Done; MAX_SPECS];
    // Whether the tile holds only zeros when the product comes.
    let mut cleared = true;
    for (to, spec) in own.iter_mut().zip(specs) {
        *to = match *spec {
            FusedKerSpec::AddMatMul {
                k,
                pa,
                pb,
                packing: 0,
            } => {
                let product = unsafe { product(k, pa as *const v128, pb as *const v128) };
                let ptr = tile.insert(product).as_mut_ptr() as *mut u8;
                if cleared {
                    // The kernel's LoadTile reads our row-major tile as is.
                    FusedKerSpec::LoadTile(ptr as *const f32, ptr as *const f32)
                } else {
                    FusedKerSpec::AddUnicast(OutputStoreKer {
                        ptr,
                        row_byte_stride: 32,
                        col_byte_stride: 4,
                        item_size: 4,
                    })
                }
            }
            other => {
                cleared &= matches!(other, FusedKerSpec::Clear);
                other
            }
        };
    }
    unsafe { inner(&own[..specs.len()]) }
}

/// The 8x8 product of A packed `[k][8]` and B packed `[k][8]`, row-major:
/// row `r` is `[2r]` (columns 0-3) and `[2r + 1]` (columns 4-7).
#[inline(always)]
unsafe fn product(k: usize, a: *const v128, b: *const v128) -> [v128; 16] {
    // Lane `l` of `v` in every lane.
    macro_rules! lane {
        ($v:expr, $l:literal) => {
            i32x4_shuffle::<$l, $l, $l, $l>($v, $v)
        };
    }
    // Accumulators in locals: the loop keeps them wherever Cranelift can.
    let mut acc = [f32x4_splat(0.0); 16];
    let mut i = 0;
    unsafe {
        while i + 2 <= k {
            let (a0, a1) = (v128_load(a.add(2 * i)), v128_load(a.add(2 * i + 1)));
            let (b0, b1) = (v128_load(b.add(2 * i)), v128_load(b.add(2 * i + 1)));
            let (c0, c1) = (v128_load(a.add(2 * i + 2)), v128_load(a.add(2 * i + 3)));
            let (d0, d1) = (v128_load(b.add(2 * i + 2)), v128_load(b.add(2 * i + 3)));
            macro_rules! row {
                ($r:literal, $x:ident, $y:ident, $l:literal) => {{
                    let (s, t) = (lane!($x, $l), lane!($y, $l));
                    acc[2 * $r] = madd(madd(acc[2 * $r], s, b0), t, d0);
                    acc[2 * $r + 1] = madd(madd(acc[2 * $r + 1], s, b1), t, d1);
                }};
            }
            row!(0, a0, c0, 0);
            row!(1, a0, c0, 1);
            row!(2, a0, c0, 2);
            row!(3, a0, c0, 3);
            row!(4, a1, c1, 0);
            row!(5, a1, c1, 1);
            row!(6, a1, c1, 2);
            row!(7, a1, c1, 3);
            i += 2;
        }
        if i < k {
            let (a0, a1) = (v128_load(a.add(2 * i)), v128_load(a.add(2 * i + 1)));
            let (b0, b1) = (v128_load(b.add(2 * i)), v128_load(b.add(2 * i + 1)));
            let rows = [
                lane!(a0, 0),
                lane!(a0, 1),
                lane!(a0, 2),
                lane!(a0, 3),
                lane!(a1, 0),
                lane!(a1, 1),
                lane!(a1, 2),
                lane!(a1, 3),
            ];
            for (r, s) in rows.into_iter().enumerate() {
                acc[2 * r] = madd(acc[2 * r], s, b0);
                acc[2 * r + 1] = madd(acc[2 * r + 1], s, b1);
            }
        }
    }
    acc
}

/// `acc + a * b` without fused multiply-add, as the components are built.
#[inline(always)]
fn madd(acc: v128, a: v128, b: v128) -> v128 {
    f32x4_add(acc, f32x4_mul(a, b))
}
