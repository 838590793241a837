//! Opening a system library at run time (libheif, LibRaw): the binary builds and starts without
//! it, and the first file that needs it loads it once.

use std::sync::OnceLock;

/// The library in `cell`, opened on first use with [`open_first`]; `missing` words the error when
/// it is not installed (given the loader's message). The outcome is kept: one attempt a process.
pub(super) fn load_once<T>(
    cell: &'static OnceLock<Result<T, String>>,
    names: &[&str],
    bind: fn(libloading::Library) -> Result<T, libloading::Error>,
    missing: impl FnOnce(&str) -> String,
) -> Result<&'static T, String> {
    cell.get_or_init(|| {
        open_first(names, bind).map_err(|e| match e {
            OpenError::Unusable(why) => why,
            OpenError::Missing(last) => missing(&last),
        })
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Why a library could not be used.
pub(super) enum OpenError {
    /// None of the names loaded: the loader's last message (the library is not installed).
    Missing(String),
    /// A name loaded but lacks a symbol (an old or unusual build): which, and why.
    Unusable(String),
}

/// Opens the first of `names` that loads, then binds its symbols with `bind`.
pub(super) fn open_first<T>(
    names: &[&str],
    bind: fn(libloading::Library) -> Result<T, libloading::Error>,
) -> Result<T, OpenError> {
    let mut last = String::new();
    for name in names {
        // SAFETY: loading these libraries runs their initialisers, which have no preconditions;
        // the libraries are the system's own builds of libheif or LibRaw.
        match unsafe { libloading::Library::new(*name) } {
            Ok(l) => return bind(l).map_err(|e| OpenError::Unusable(format!("{name}: {e}"))),
            Err(e) => last = e.to_string(),
        }
    }
    Err(OpenError::Missing(last))
}
