//! Shared helpers of the model parity tests (fixtures are read from `datasets/` in the repo).
#![allow(dead_code)]

pub mod toy;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use jsearch_encoders::{ClipConfig, ClipModel, LoadOptions};

pub fn datasets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../datasets")
}

pub fn fixture_dir() -> PathBuf {
    datasets().join("jina-clip-v2-tiny")
}

pub fn fixture_model_dir() -> PathBuf {
    fixture_dir().join("model")
}

pub fn toy_model_dir() -> PathBuf {
    datasets().join("toy-shapes/model")
}

pub fn load_fixture_model() -> ClipModel {
    ClipModel::load(&fixture_model_dir(), &LoadOptions::default()).expect("load fixture model")
}

pub fn fixture_config() -> ClipConfig {
    ClipConfig::load(&fixture_model_dir().join("config.json")).expect("fixture config")
}

/// The fixture checkpoint as an in-memory map (for ablations that edit weights).
pub fn fixture_weights() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture_model_dir().join("model.safetensors"), &Device::Cpu)
        .expect("fixture weights")
}

pub fn vb_from(weights: HashMap<String, Tensor>) -> VarBuilder<'static> {
    VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu)
}

pub fn fixture_vb() -> VarBuilder<'static> {
    vb_from(fixture_weights())
}

pub struct Expected {
    pub tensors: HashMap<String, Tensor>,
    pub json: serde_json::Value,
}

impl Expected {
    pub fn load() -> Self {
        let dir = fixture_dir();
        let tensors =
            candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu)
                .expect("expected.safetensors");
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("expected.json")).expect("json"))
                .expect("expected.json");
        Self { tensors, json }
    }

    pub fn t(&self, name: &str) -> &Tensor {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("missing expected tensor {name}"))
    }

    pub fn f32s(&self, name: &str) -> Vec<f32> {
        self.t(name)
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    pub fn rows(&self, name: &str) -> Vec<Vec<f32>> {
        self.t(name)
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec2()
            .unwrap()
    }

    pub fn ids(&self, name: &str) -> Vec<u32> {
        self.t(name)
            .flatten_all()
            .unwrap()
            .to_vec1::<i64>()
            .unwrap()
            .into_iter()
            .map(|v| v as u32)
            .collect()
    }

    pub fn texts(&self) -> Vec<String> {
        self.json["texts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["text"].as_str().unwrap().to_string())
            .collect()
    }

    pub fn n_images(&self) -> usize {
        self.json["images"].as_array().unwrap().len()
    }

    pub fn pixels(&self, j: usize) -> Vec<f32> {
        self.f32s(&format!("image.{j}.pixel_values"))
    }
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}

pub fn max_abs_diff_rows(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len(), "row count mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| max_abs_diff(x, y))
        .fold(0.0f32, f32::max)
}

pub fn flat(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    let d = max_abs_diff(got, want);
    assert!(d <= tol, "{what}: max abs diff {d:e} > {tol:e}");
}
