//! CPU timing of the towers at a given config with random weights (no checkpoint needed).
//!
//! `cargo run --release -p jsearch-encoders --example speed_random -- CONFIG.json [text|vision|both] [SEQ] [BATCH]`

use std::time::Instant;

use candle_core::{DType, Device};
use jsearch_encoders::random_var_builder;
use jsearch_encoders::text::TextModel;
use jsearch_encoders::vision::VisionModel;
use jsearch_encoders::{Adapter, ClipConfig};

fn main() -> anyhow_free::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let cfg = ClipConfig::load(std::path::Path::new(&args[1]))?;
    let which = args.get(2).map(String::as_str).unwrap_or("both");
    let seq: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(512);
    let batch: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1);
    let dev = Device::Cpu;
    let vb = random_var_builder(DType::F32, &dev);
    if which != "vision" {
        let t0 = Instant::now();
        let text = TextModel::new(&cfg.text_config, vb.clone(), Adapter::Merged)?;
        eprintln!("text load {:.2}s", t0.elapsed().as_secs_f64());
        let ids: Vec<Vec<u32>> = (0..batch)
            .map(|b| {
                (0..seq)
                    .map(|i| {
                        if i == 0 {
                            0
                        } else if i == seq - 1 {
                            2
                        } else {
                            5 + ((i * 7 + b) % 1000) as u32
                        }
                    })
                    .collect()
            })
            .collect();
        text.forward(&ids)?; // warm-up
        let t0 = Instant::now();
        let reps = 3;
        for _ in 0..reps {
            text.forward(&ids)?;
        }
        eprintln!(
            "text {batch}x{seq}: {:.1} ms",
            t0.elapsed().as_secs_f64() * 1000.0 / reps as f64
        );
    }
    if which != "text" {
        let t0 = Instant::now();
        let vision = VisionModel::new(&cfg.vision_config, vb)?;
        eprintln!("vision load {:.2}s", t0.elapsed().as_secs_f64());
        let s = cfg.vision_config.image_size;
        let px = vec![0.1f32; 3 * s * s];
        let refs: Vec<&[f32]> = (0..batch).map(|_| px.as_slice()).collect();
        let t = vision.pixels_tensor(&refs)?;
        vision.forward(&t)?;
        let t0 = Instant::now();
        let reps = 2;
        for _ in 0..reps {
            vision.forward(&t)?;
        }
        eprintln!(
            "vision {batch}x{s}px: {:.1} ms",
            t0.elapsed().as_secs_f64() * 1000.0 / reps as f64
        );
    }
    Ok(())
}

mod anyhow_free {
    pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;
}
