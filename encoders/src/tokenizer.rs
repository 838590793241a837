//! XLM-RoBERTa tokenizer (`tokenizer.json`) with the reference call-time settings:
//! truncation to 512 ids (longest-first, right), no fixed padding (spec §1.5, §3.1).

use std::path::{Path, PathBuf};

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{EncoderError, Result};

/// Maximum number of ids per text, `<s>` and `</s>` included (`max_length=512`).
pub const MAX_TOKENS: usize = 512;

/// A loaded tokenizer with the stored truncation/padding of `tokenizer.json` overridden.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    path: PathBuf,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl TextTokenizer {
    /// Loads `tokenizer.json`. Whatever truncation/padding the file stores (the real
    /// jina-clip-v2 file says 77/fixed 77), texts are truncated to 512 ids and never padded.
    pub fn load(path: &Path) -> Result<Self> {
        let inner = Tokenizer::from_file(path).map_err(|e| EncoderError::Tokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::from_tokenizer(inner, path)
    }

    /// Wraps an already constructed tokenizer (`origin` is only used in error messages).
    pub fn from_tokenizer(mut inner: Tokenizer, origin: &Path) -> Result<Self> {
        let err = |message: String| EncoderError::Tokenizer {
            path: origin.to_path_buf(),
            message,
        };
        inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: MAX_TOKENS,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| err(e.to_string()))?;
        inner.with_padding(None);
        Ok(Self {
            inner,
            path: origin.to_path_buf(),
        })
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Token ids of one text: `<s> pieces </s>`, at most 512, unpadded.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| EncoderError::Tokenizer {
                path: self.path.clone(),
                message: format!("cannot tokenise {:?}: {e}", preview(text)),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of several texts (parallel), each unpadded, input order kept.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let encs =
            self.inner
                .encode_batch(texts.to_vec(), true)
                .map_err(|e| EncoderError::Tokenizer {
                    path: self.path.clone(),
                    message: e.to_string(),
                })?;
        Ok(encs.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }
}

fn preview(text: &str) -> String {
    text.chars().take(40).collect()
}
