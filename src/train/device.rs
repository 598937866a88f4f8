//! Where a run computes: the device choice (`cpu`, `flex`, `cuda[:N]`,
//! `auto`) and the size of the compute thread pools.

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::error::{TrainError, TrainResult};

/// Where tensors live: `cpu` (LibTorch's CPU when the `tch` feature is
/// built, else flex), `flex` (the pure-Rust backend), `cuda[:N]` (LibTorch),
/// or `auto` (CUDA when LibTorch sees a GPU, else `cpu`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceChoice {
    Cpu,
    Flex,
    Cuda(usize),
    Auto,
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(DeviceChoice::Cpu),
            "flex" => Ok(DeviceChoice::Flex),
            "auto" => Ok(DeviceChoice::Auto),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| format!("unknown device {s:?} (cpu, flex, cuda, cuda:N or auto)")),
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Flex => f.write_str("flex"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceChoice::Auto => f.write_str("auto"),
        }
    }
}

impl DeviceChoice {
    /// The (non-autodiff) burn device.
    pub fn device(&self) -> TrainResult<Device> {
        match self.resolve() {
            DeviceChoice::Flex => flex_device(),
            DeviceChoice::Cuda(n) => cuda_device(n),
            _ => cpu_device(),
        }
    }

    /// `auto` made concrete: what this build and machine will use.
    pub fn resolve(&self) -> DeviceChoice {
        match self {
            DeviceChoice::Auto if cuda_available() => DeviceChoice::Cuda(0),
            DeviceChoice::Auto => DeviceChoice::Cpu,
            other => other.clone(),
        }
    }

    /// Which backend computes: `libtorch`, `libtorch-cuda` or `flex`.
    pub fn backend(&self) -> &'static str {
        match self.resolve() {
            DeviceChoice::Cuda(_) => "libtorch-cuda",
            DeviceChoice::Flex => "flex",
            _ if cfg!(feature = "tch") => "libtorch",
            _ => "flex",
        }
    }
}

/// Sets up the compute threads, `n` of them (0: one per core): rayon's global
/// pool, which flex computes on, and with LibTorch its intra-op pool (left at
/// LibTorch's own default for 0). Call before either starts work, from the
/// thread that will compute; a rayon pool that already exists is kept.
///
/// With two or more threads the calling thread is one of the pool's
/// workers, so each operation's parallel loop starts and ends on it. A
/// caller outside the pool hands every loop to the pool and sleeps until a
/// worker wakes it: the official job's `train` took longer in 11 of 12
/// interleaved pairs, with more system time (docs/BENCHMARKS.md). A pool of
/// one keeps a worker of its own: a calling thread in the pool runs the
/// pool's jobs only while it waits on the pool, so a job sent from any other
/// thread would wait for it.
pub fn set_compute_threads(n: usize) {
    let threads = if n > 0 {
        n
    } else {
        std::thread::available_parallelism().map_or(1, |c| c.get())
    };
    let builder = rayon::ThreadPoolBuilder::new().num_threads(threads);
    let builder = if threads > 1 {
        builder.use_current_thread()
    } else {
        builder
    };
    if let Err(e) = builder.build_global() {
        tracing::debug!("rayon pool already set up: {e}");
    }
    #[cfg(feature = "tch")]
    if n > 0 {
        tch::set_num_threads(i32::try_from(n).unwrap_or(i32::MAX));
    }
}

#[cfg(feature = "tch")]
fn cuda_available() -> bool {
    tch::Cuda::is_available()
}

#[cfg(not(feature = "tch"))]
fn cuda_available() -> bool {
    false
}

#[cfg(feature = "flex")]
fn flex_device() -> TrainResult<Device> {
    Ok(Device::flex())
}

#[cfg(not(feature = "flex"))]
fn flex_device() -> TrainResult<Device> {
    Err(TrainError::Device(
        "flex: this build has no flex backend (rebuild with --features flex)".into(),
    ))
}

#[cfg(feature = "tch")]
#[allow(deprecated)] // burn 0.22 deprecates burn-tch but it is the LibTorch path we need
fn cpu_device() -> TrainResult<Device> {
    Ok(Device::libtorch())
}

#[cfg(not(feature = "tch"))]
fn cpu_device() -> TrainResult<Device> {
    flex_device()
}

#[cfg(feature = "tch")]
#[allow(deprecated)] // see cpu_device
fn cuda_device(n: usize) -> TrainResult<Device> {
    if !cuda_available() {
        return Err(TrainError::Device(format!(
            "cuda:{n}: LibTorch sees no CUDA device (use --device cpu)"
        )));
    }
    Ok(Device::libtorch_cuda(n))
}

#[cfg(not(feature = "tch"))]
fn cuda_device(n: usize) -> TrainResult<Device> {
    Err(TrainError::Device(format!(
        "cuda:{n}: this build has no CUDA backend (rebuild with --features tch)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_choices_parse() {
        assert_eq!("cpu".parse(), Ok(DeviceChoice::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceChoice::Cuda(0)));
        assert_eq!("cuda:2".parse(), Ok(DeviceChoice::Cuda(2)));
        assert_eq!("flex".parse(), Ok(DeviceChoice::Flex));
        assert!("gpu".parse::<DeviceChoice>().is_err());
        // Without a GPU, auto is the CPU.
        if !cuda_available() {
            assert_eq!(DeviceChoice::Auto.resolve(), DeviceChoice::Cpu);
        }
    }
}
