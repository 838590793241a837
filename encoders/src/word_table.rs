//! The text tower's word-embedding table (250 002 × 1024 for the real model, half of the text
//! tower's weights), looked up one row per token.
//!
//! Loaded from a checkpoint file, the table stays in the memory-mapped safetensors file in its
//! stored dtype and the LoRA delta of the chosen adapter (`E + s · A[task] @ B[task]`, rank 4) is
//! added to each looked-up row, so a query touches a few dozen rows instead of converting and
//! merging a gigabyte at every start. Built from a `VarBuilder` (tests, random weights), the
//! merged table is an ordinary tensor.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use memmap2::Mmap;

use crate::error::{EncoderError, Result};

/// A word-embedding table: merged in memory, or mapped with the LoRA delta added per row.
#[derive(Debug, Clone)]
pub(crate) enum WordTable {
    /// `[vocab, hidden]` in the compute dtype, adapter merged.
    Tensor(Tensor),
    /// Rows read from the checkpoint's mapping.
    Mapped(Arc<MappedTable>),
}

/// One tensor inside a mapped safetensors file.
#[derive(Debug)]
struct View {
    map: Arc<Mmap>,
    offset: usize,
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
}

impl View {
    fn bytes(&self) -> usize {
        match self.dtype {
            safetensors::Dtype::F32 => 4,
            _ => 2,
        }
    }

    /// `out.len()` values starting at element `start`, as f32.
    fn read(&self, start: usize, out: &mut [f32]) {
        let b = self.bytes();
        let at = self.offset + start * b;
        let src = &self.map[at..at + out.len() * b];
        match self.dtype {
            safetensors::Dtype::F32 => {
                for (o, c) in out.iter_mut().zip(src.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            safetensors::Dtype::BF16 => {
                for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                    *o = half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
                }
            }
            _ => {
                for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                    *o = half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
                }
            }
        }
    }
}

/// The base table and the chosen adapter's factors, all in the checkpoint's mapping.
#[derive(Debug)]
pub(crate) struct MappedTable {
    base: View,
    rows: usize,
    cols: usize,
    /// `(A [rows, r] of the task, B [r, cols] of the task as f32, scaling)`.
    lora: Option<(View, usize, Vec<f32>, f32)>,
}

/// The files of a checkpoint, each mapped once, for reading single tensors.
pub(crate) struct Checkpoint {
    files: Vec<MappedFile>,
}

/// One safetensors file, mapped, with its header parsed once.
struct MappedFile {
    path: std::path::PathBuf,
    map: Arc<Mmap>,
    /// Where the tensor data starts (after the length and the JSON header).
    data_start: usize,
    header: safetensors::tensor::Metadata,
}

impl Checkpoint {
    /// Maps the safetensors files and parses (and validates) their headers.
    pub(crate) fn open(files: &[std::path::PathBuf]) -> Result<Self> {
        let files = files
            .iter()
            .map(|p| {
                let io = |source| EncoderError::Io {
                    path: p.clone(),
                    source,
                };
                let f = std::fs::File::open(p).map_err(io)?;
                // SAFETY: read-only mapping, same contract as candle's mmaped safetensors.
                let map = unsafe { Mmap::map(&f) }.map_err(io)?;
                let (n, header) = safetensors::SafeTensors::read_metadata(&map).map_err(|e| {
                    EncoderError::Weights {
                        path: p.clone(),
                        message: e.to_string(),
                    }
                })?;
                Ok(MappedFile {
                    path: p.clone(),
                    data_start: 8 + n,
                    header,
                    map: Arc::new(map),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { files })
    }

    fn view(&self, name: &str) -> Result<Option<View>> {
        for f in &self.files {
            let Some(info) = f.header.info(name) else {
                continue;
            };
            let dtype = info.dtype;
            if !matches!(
                dtype,
                safetensors::Dtype::F32 | safetensors::Dtype::BF16 | safetensors::Dtype::F16
            ) {
                return Err(EncoderError::Weights {
                    path: f.path.clone(),
                    message: format!("{name}: unsupported dtype {dtype:?}"),
                });
            }
            // `read_metadata` checked that every tensor's bytes lie inside the file.
            return Ok(Some(View {
                map: f.map.clone(),
                offset: f.data_start + info.data_offsets.0,
                dtype,
                shape: info.shape.clone(),
            }));
        }
        Ok(None)
    }

    fn path(&self) -> &Path {
        self.files.first().map_or(Path::new(""), |f| &f.path)
    }

    /// The word table under `prefix` (`…word_embeddings`) with adapter `task` (or none) merged
    /// per row; `None` when the checkpoint does not hold it in the LoRA layout.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn word_table(
        &self,
        prefix: &str,
        rows: usize,
        cols: usize,
        lora: Option<(usize, usize, usize, f64)>,
    ) -> Result<Option<WordTable>> {
        let bad = |message: String| EncoderError::Weights {
            path: self.path().to_path_buf(),
            message,
        };
        let p = format!("{prefix}.parametrizations.weight");
        let Some(base) = self.view(&format!("{p}.original"))? else {
            return Ok(None);
        };
        if base.shape != [rows, cols] {
            return Err(bad(format!(
                "{p}.original: shape {:?}, expected [{rows}, {cols}]",
                base.shape
            )));
        }
        let lora = match lora {
            None => None,
            Some((n, r, task, scaling)) => {
                let a = self
                    .view(&format!("{p}.0.lora_A"))?
                    .ok_or_else(|| bad(format!("{p}.0.lora_A missing")))?;
                let b = self
                    .view(&format!("{p}.0.lora_B"))?
                    .ok_or_else(|| bad(format!("{p}.0.lora_B missing")))?;
                if a.shape != [n, rows, r] || b.shape != [n, r, cols] || task >= n {
                    return Err(bad(format!(
                        "{p}: LoRA shapes {:?} / {:?}, expected [{n}, {rows}, {r}] / [{n}, {r}, {cols}]",
                        a.shape, b.shape
                    )));
                }
                let mut bt = vec![0f32; r * cols];
                b.read(task * r * cols, &mut bt);
                // A's rows of this task start at task * rows * r.
                let a = View {
                    offset: a.offset + task * rows * r * a.bytes(),
                    ..a
                };
                Some((a, r, bt, scaling as f32))
            }
        };
        Ok(Some(WordTable::Mapped(Arc::new(MappedTable {
            base,
            rows,
            cols,
            lora,
        }))))
    }
}

impl WordTable {
    /// `[ids.len(), hidden]` rows in `dtype` on `device`.
    pub(crate) fn lookup(&self, ids: &Tensor, dtype: DType, device: &Device) -> Result<Tensor> {
        match self {
            WordTable::Tensor(t) => Ok(t.index_select(ids, 0)?),
            WordTable::Mapped(m) => {
                let ids = ids.to_vec1::<u32>()?;
                let mut out = vec![0f32; ids.len() * m.cols];
                let mut arow = Vec::new();
                for (row, &id) in out.chunks_exact_mut(m.cols).zip(&ids) {
                    let id = id as usize;
                    if id >= m.rows {
                        return Err(EncoderError::InvalidArgument(format!(
                            "token id {id} out of range (vocab {})",
                            m.rows
                        )));
                    }
                    m.base.read(id * m.cols, row);
                    if let Some((a, r, b, s)) = &m.lora {
                        arow.resize(*r, 0.0);
                        a.read(id * r, &mut arow);
                        for (c, v) in row.iter_mut().enumerate() {
                            let mut d = 0f32;
                            for (j, aj) in arow.iter().enumerate() {
                                d += aj * b[j * m.cols + c];
                            }
                            *v += d * s;
                        }
                    }
                }
                let t = Tensor::from_vec(out, (ids.len(), m.cols), device)?;
                Ok(t.to_dtype(dtype)?)
            }
        }
    }
}
