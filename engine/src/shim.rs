//! TEMPORARY SHIM — remove once `jsearch-encoders` ships `ClipModel`, `preprocess` and `hub`
//! (helpers A and B). Contract-shaped stubs from docs/api-contracts.md so that the engine compiles;
//! every call fails with a clear error.

#![allow(dead_code)]

pub mod encoders {
    pub use jsearch_encoders::{EncoderError, Result};
    use std::path::Path;

    /// Which towers to load.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Towers {
        Text,
        Vision,
        Both,
    }

    pub struct LoadOptions {
        pub device: candle_core::Device,
        pub dtype: candle_core::DType,
        pub towers: Towers,
    }

    impl Default for LoadOptions {
        fn default() -> Self {
            LoadOptions {
                device: candle_core::Device::Cpu,
                dtype: candle_core::DType::F32,
                towers: Towers::Both,
            }
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum TextRole {
        Document,
        Query,
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ModelIdentity {
        pub name: String,
        pub fingerprint: String,
    }

    pub struct ClipModel {
        identity: ModelIdentity,
        pre: preprocess::Preprocessor,
    }

    fn missing() -> EncoderError {
        EncoderError::ModelNotFound("engine shim: ClipModel not implemented yet".into())
    }

    impl ClipModel {
        pub fn load(_dir: &Path, _opts: &LoadOptions) -> Result<Self> {
            Err(missing())
        }
        pub fn identity(&self) -> &ModelIdentity {
            &self.identity
        }
        pub fn embed_dim(&self) -> usize {
            0
        }
        pub fn image_size(&self) -> usize {
            self.pre.size()
        }
        pub fn preprocessor(&self) -> &preprocess::Preprocessor {
            &self.pre
        }
        pub fn encode_texts(&self, _texts: &[&str], _role: TextRole) -> Result<Vec<Vec<f32>>> {
            Err(missing())
        }
        pub fn encode_pixels(&self, _p: &[preprocess::PixelValues]) -> Result<Vec<Vec<f32>>> {
            Err(missing())
        }
    }

    pub fn normalize(v: &mut [f32]) {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        v.iter_mut().for_each(|x| *x /= n);
    }

    pub mod preprocess {
        use super::{missing, Result};

        pub struct PixelValues {
            pub size: usize,
            pub data: Vec<f32>,
        }

        #[derive(Debug, Clone, Default)]
        pub struct DecodeOptions {
            pub apply_exif_orientation: bool,
            pub max_megapixels: Option<f64>,
        }

        pub struct Preprocessor {
            size: usize,
        }

        impl Preprocessor {
            pub fn size(&self) -> usize {
                self.size
            }
            pub fn preprocess_rgb(&self, _img: &image::RgbImage) -> PixelValues {
                PixelValues {
                    size: self.size,
                    data: vec![0.0; 3 * self.size * self.size],
                }
            }
        }

        pub fn decode_rgb(_bytes: &[u8], _opts: &DecodeOptions) -> Result<image::RgbImage> {
            Err(missing())
        }
    }

    pub mod hub {
        use super::Result;
        use std::path::{Path, PathBuf};

        pub fn resolve_model_dir(explicit: Option<&Path>, _progress: bool) -> Result<PathBuf> {
            explicit
                .map(Path::to_path_buf)
                .ok_or_else(|| super::missing())
        }
    }
}
