//! TEMPORARY SHIM — remove once `jsearch_encoders::hub::resolve_model_dir` lands (helper B).
//! Contract-shaped stand-in: explicit folder, else `$JSEARCH_MODEL`, else a clear error.

pub mod hub {
    use jsearch_encoders::{EncoderError, Result};
    use std::path::{Path, PathBuf};

    /// Explicit dir > `$JSEARCH_MODEL` > error (the cache/download logic comes with helper B's hub).
    pub fn resolve_model_dir(explicit: Option<&Path>, _progress: bool) -> Result<PathBuf> {
        if let Some(p) = explicit {
            return Ok(p.to_path_buf());
        }
        if let Some(p) = std::env::var_os("JSEARCH_MODEL").filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(p));
        }
        Err(EncoderError::ModelNotFound(
            "no model: pass --model DIR or set JSEARCH_MODEL".into(),
        ))
    }
}
