//! The compute worker: answers the page's requests (see `switchscope_web::protocol`).
// The one unsafe item: running the linker's constructor list once (below).
#![allow(unsafe_code)]

// The worker's dependencies register things before `main` runs (CubeCL's IR dialects and WGSL
// operations, through the `inventory` crate's static constructors). A binary is linked as a
// WebAssembly command, and the linker then wraps every export so that it runs those
// constructors first, unless the module calls them itself. wasm-bindgen's glue calls two exports
// (`__externref_table_alloc` and `__externref_table_dealloc`) for every JS value that crosses
// into or out of the wasm, so the wrappers re-ran every constructor many times per decoded token:
// about half of the worker's time on the CPU path (docs/BENCHMARKS.md, section 2). Calling them
// once, here, leaves every export unwrapped.
#[cfg(target_arch = "wasm32")]
unsafe extern "C" {
    fn __wasm_call_ctors();
}

fn main() {
    // SAFETY: the linker's constructor list, run once before anything uses what it registers;
    // nothing else calls it, since no export is wrapped once it is referenced here.
    #[cfg(target_arch = "wasm32")]
    unsafe {
        __wasm_call_ctors();
    }
    console_error_panic_hook::set_once();
    switchscope_web::worker::start();
}
