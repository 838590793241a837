//! Whether the CUDA libraries a `cuda` build needs can be opened on this machine.
//!
//! A `cuda` build loads the NVIDIA driver (`libcuda.so.1`) and cuBLAS, cuBLASLt and cuRAND at run
//! time (the vendored cudarc's `dynamic-loading`, see `vendor/cudarc/README.jsearch.md`), so the
//! same binary starts on machines without a GPU. cudarc panics when a library is missing, so
//! callers ask here first and fall back (or fail) with a sentence instead.

/// The libraries candle's CUDA device opens when it is created, by cudarc's name: the driver,
/// then the math libraries (their soname carries the CUDA major version the build was made for).
const LIBRARIES: [(&str, &str); 4] = [
    ("cuda", "the NVIDIA driver"),
    ("cublas", "cuBLAS"),
    ("cublasLt", "cuBLASLt"),
    ("curand", "cuRAND"),
];

/// `Ok(())` when every library a CUDA device needs opens; else which one does not, and where it
/// comes from. Without the `cuda` feature: always an error saying so.
pub fn cuda_libraries() -> Result<(), String> {
    #[cfg(feature = "cuda")]
    {
        for (name, what) in LIBRARIES {
            let candidates = cudarc::get_lib_name_candidates(name);
            // SAFETY: opening a shared library runs its initialisers; these are NVIDIA's own
            // libraries, which cudarc would open the same way on first use.
            let opened = candidates
                .iter()
                .any(|c| unsafe { libloading::Library::new(c) }.is_ok());
            if !opened {
                if name == "cuda" {
                    return Err(format!("{what} is not installed (libcuda.so.1 not found)"));
                }
                // The first versioned name is the build's CUDA major version (libcublas.so.13).
                let soname = candidates
                    .iter()
                    .find(|c| {
                        c.rsplit('.')
                            .next()
                            .is_some_and(|v| v.parse::<u32>().is_ok())
                    })
                    .cloned()
                    .unwrap_or_else(|| format!("lib{name}.so"));
                return Err(format!(
                    "{what} not found ({soname}: install the CUDA runtime libraries or put \
                     their folder on LD_LIBRARY_PATH, e.g. PyTorch's site-packages/nvidia/cu13/lib)"
                ));
            }
        }
        Ok(())
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = LIBRARIES;
        Err("built without the cuda feature".to_string())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn answers_without_panicking() {
        // On a machine without the driver (CI) this is an error naming the driver; with one, Ok.
        match super::cuda_libraries() {
            Ok(()) => {}
            Err(why) => assert!(!why.is_empty()),
        }
    }
}
