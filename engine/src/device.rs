//! Choosing the compute device: `cpu`, `cuda`, `cuda:N` or `auto`.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Which device the model runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// CUDA device 0 when the crate is built with the `cuda` feature and a GPU is present, else CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device N (needs the `cuda` feature).
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = Error;

    /// Parses `auto`, `cpu`, `cuda` (= `cuda:0`) or `cuda:N` (case-insensitive).
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            _ => {
                if let Some(n) = t.strip_prefix("cuda:") {
                    n.parse::<usize>().map(DeviceChoice::Cuda).map_err(|_| {
                        Error::InvalidArgument(format!(
                            "invalid device {s:?}: expected cpu, cuda, cuda:N or auto"
                        ))
                    })
                } else {
                    Err(Error::InvalidArgument(format!(
                        "invalid device {s:?}: expected cpu, cuda, cuda:N or auto"
                    )))
                }
            }
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => write!(f, "auto"),
            DeviceChoice::Cpu => write!(f, "cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Compute precision of the encoders. LayerNorm, softmax and pooling accumulate in f32 whatever
/// is chosen here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// bf16 on a GPU; on a CPU the fastest path that keeps cosine ≥ 0.999 to f32 for this
    /// CPU and workload, from shipped measurements (`auto_precision`): e.g. int8 for text
    /// queries, bf16 for indexing on a CPU with AVX512-BF16, f32 where nothing faster holds.
    #[default]
    Auto,
    /// f32 everywhere (the reference: parity with the official implementation).
    F32,
    /// bfloat16. On a GPU: bf16 weights and activations. On a CPU with AVX512-BF16: the linear
    /// layers run as bf16 × bf16 products accumulated in f32 (on AMX tiles where the CPU has
    /// them: the fast CPU path for images and long texts), everything else in f32. On other
    /// CPUs: bf16 tensors (slow; no bf16 kernel).
    Bf16,
    /// float16 weights and activations.
    F16,
    /// int8 linear layers (our kernel on x86-64 with AVX2 or better, candle's Q8_0 elsewhere)
    /// with f32 elsewhere: the fastest CPU path for texts (CPU only).
    Int8,
}

impl Precision {
    /// Whether the linear layers are quantised to 8 bits.
    pub fn int8(self) -> bool {
        self == Precision::Int8
    }

    /// The encoders' load options for this precision on `device`.
    pub(crate) fn load_options(
        self,
        device: candle_core::Device,
        towers: jsearch_encoders::Towers,
    ) -> jsearch_encoders::LoadOptions {
        jsearch_encoders::LoadOptions {
            dtype: self.dtype_for(&device),
            int8: self.int8(),
            bf16_matmul: self.bf16_matmul(&device),
            device,
            towers,
            ..jsearch_encoders::LoadOptions::default()
        }
    }

    /// Whether this precision means the AVX512-BF16 matmul kernel on `device`.
    pub(crate) fn bf16_matmul(self, device: &candle_core::Device) -> bool {
        self == Precision::Bf16 && device.is_cpu() && jsearch_encoders::bf16_kernel_available()
    }

    /// The candle dtype this precision means on `device`.
    pub(crate) fn dtype_for(self, device: &candle_core::Device) -> candle_core::DType {
        use candle_core::DType;
        match self {
            Precision::Auto if device.is_cuda() => DType::BF16,
            Precision::Auto | Precision::F32 | Precision::Int8 => DType::F32,
            Precision::Bf16 if self.bf16_matmul(device) => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::F16 => DType::F16,
        }
    }
}

impl FromStr for Precision {
    type Err = Error;

    /// Parses `auto`, `f32`, `bf16`, `f16` or `int8` (case-insensitive).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Precision::Auto),
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "f16" | "fp16" | "float16" => Ok(Precision::F16),
            "int8" | "q8" => Ok(Precision::Int8),
            _ => Err(Error::InvalidArgument(format!(
                "invalid precision {s:?}: expected auto, f32, bf16, f16 or int8"
            ))),
        }
    }
}

/// A resolved device, with a one-line human description for the log.
#[derive(Debug, Clone)]
pub struct ResolvedDevice {
    /// The candle device.
    pub device: candle_core::Device,
    /// E.g. `"cpu (2 threads)"`, `"cuda:0"`, `"cpu (auto: built without the cuda feature)"`.
    pub description: String,
}

/// The first line of an error: candle appends a backtrace when `RUST_BACKTRACE` is set, which
/// does not belong in a one-line log message.
fn first_line(e: &dyn std::fmt::Display) -> String {
    e.to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Whether this build can use CUDA at all (the `cuda` cargo feature).
pub fn cuda_compiled() -> bool {
    cfg!(feature = "cuda")
}

impl DeviceChoice {
    /// The device this choice names on this machine: `Auto` falls back to the CPU, saying why;
    /// an explicit `cuda` that is unavailable is an error naming the reason.
    pub fn resolve(self) -> Result<ResolvedDevice> {
        resolve(self)
    }
}

/// Opens CUDA device `n`. The libraries are loaded at run time (checked by the caller with
/// `cuda_libraries`); a panic inside the CUDA bindings still becomes an error, not an abort.
fn new_cuda(n: usize) -> std::result::Result<candle_core::Device, String> {
    match std::panic::catch_unwind(|| candle_core::Device::new_cuda(n)) {
        Ok(Ok(device)) => Ok(device),
        Ok(Err(e)) => Err(first_line(&e)),
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .map(|m| first_line(&m))
            .unwrap_or_else(|| "the CUDA bindings panicked".to_string())),
    }
}

/// Resolves a choice to a device. `Auto` falls back to the CPU (saying why); an explicit `cuda`
/// that is unavailable is an error.
pub fn resolve(choice: DeviceChoice) -> Result<ResolvedDevice> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let cpu = |why: &str| ResolvedDevice {
        device: candle_core::Device::Cpu,
        description: if why.is_empty() {
            format!("cpu ({threads} threads)")
        } else {
            format!("cpu ({threads} threads; {why})")
        },
    };
    match choice {
        DeviceChoice::Cpu => Ok(cpu("")),
        DeviceChoice::Cuda(n) => {
            if !cuda_compiled() {
                return Err(Error::Device(format!(
                    "cuda:{n} requested but this build has no CUDA support; rebuild with `--features cuda` or use --device cpu"
                )));
            }
            jsearch_encoders::cuda_libraries()
                .map_err(|why| Error::Device(format!("cannot open cuda:{n}: {why}")))?;
            let device =
                new_cuda(n).map_err(|e| Error::Device(format!("cannot open cuda:{n}: {e}")))?;
            Ok(ResolvedDevice {
                device,
                description: format!("cuda:{n}"),
            })
        }
        DeviceChoice::Auto => {
            if !cuda_compiled() {
                return Ok(cpu("auto: built without the cuda feature"));
            }
            if let Err(why) = jsearch_encoders::cuda_libraries() {
                return Ok(cpu(&format!("auto: {why}")));
            }
            match new_cuda(0) {
                Ok(device) => Ok(ResolvedDevice {
                    device,
                    description: "cuda:0 (auto)".to_string(),
                }),
                Err(e) => Ok(cpu(&format!("auto: CUDA device 0 unusable: {e}"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert_eq!("CPU".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!(
            "cuda".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(0)
        );
        assert_eq!(
            "cuda:3".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(3)
        );
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
        assert!("tpu".parse::<DeviceChoice>().is_err());
        assert_eq!(DeviceChoice::Cuda(1).to_string(), "cuda:1");
    }

    #[test]
    fn precision_parses_and_auto_is_f32_on_cpu() {
        use candle_core::{DType, Device};
        assert_eq!("BF16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert_eq!("f32".parse::<Precision>().unwrap(), Precision::F32);
        assert_eq!("fp16".parse::<Precision>().unwrap(), Precision::F16);
        assert!("int3".parse::<Precision>().is_err());
        assert!("int8".parse::<Precision>().unwrap().int8());
        assert_eq!(Precision::Int8.dtype_for(&Device::Cpu), DType::F32);
        assert_eq!(Precision::Auto.dtype_for(&Device::Cpu), DType::F32);
        // bf16 on the CPU: the AVX512-BF16 kernel over f32 tensors where the CPU has it
        let fast = jsearch_encoders::bf16_kernel_available();
        assert_eq!(Precision::Bf16.bf16_matmul(&Device::Cpu), fast);
        assert_eq!(
            Precision::Bf16.dtype_for(&Device::Cpu),
            if fast { DType::F32 } else { DType::BF16 }
        );
        assert!(!Precision::F32.bf16_matmul(&Device::Cpu));
        let o = Precision::Bf16.load_options(Device::Cpu, jsearch_encoders::Towers::Text);
        assert_eq!((o.bf16_matmul, o.int8), (fast, false));
    }

    #[test]
    fn error_messages_keep_their_first_line() {
        assert_eq!(first_line(&"boom\n   0: bt\n   1: x"), "boom");
        assert_eq!(first_line(&""), "");
    }

    #[test]
    fn cpu_always_resolves() {
        let d = resolve(DeviceChoice::Cpu).unwrap();
        assert!(d.device.is_cpu());
        assert!(d.description.starts_with("cpu"));
        let a = resolve(DeviceChoice::Auto).unwrap();
        if !cuda_compiled() {
            assert!(a.device.is_cpu());
            assert!(a.description.contains("without the cuda feature"));
        }
    }

    #[test]
    fn explicit_cuda_without_feature_is_an_error() {
        if !cuda_compiled() {
            let err = resolve(DeviceChoice::Cuda(0)).unwrap_err().to_string();
            assert!(err.contains("--features cuda"), "{err}");
        }
    }
}
