//! The LLaVA model every stage trains and samples: a CLIP vision tower ([`vision`]), a projector
//! ([`projector`]) and a LLaMA decoder ([`llama`]) composed in [`llava`], with Hugging Face
//! checkpoints ([`checkpoint`]), the CLIP image processor ([`processor`]), KV-cache generation
//! ([`generate`]), LoRA ([`lora`]) and the score / generate / export jobs ([`jobs`]).
//!
//! Module field names equal the checkpoint keys, so loading is key for key.

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod generate;
pub mod hf_config;
pub mod jobs;
pub mod llama;
pub mod llava;
pub mod lora;
pub mod norm;
pub mod processor;
pub mod projector;
pub mod store;
pub mod vision;

pub use batch::{PaddingSide, TextBatch};
pub use config::{FeatureStrategy, LlamaConfig, LlavaConfig, ProjectorKind, VisionConfig};
pub use llava::{ImageInput, Llava};

use burn::nn::Linear;
use burn::tensor::Tensor;
use std::path::{Path, PathBuf};

/// `f` applied to `x` with every leading dimension folded into the rows, the last one becoming
/// `d_out`. burn keeps a `[b, t, d]` product batched when `t` fills its row tiles, and Flex then
/// packs the shared weight once per batch: folding made a train step 15-20% faster
/// (BENCHMARKS.md).
pub(crate) fn in_rows<const D: usize>(
    x: Tensor<D>,
    d_out: usize,
    f: impl FnOnce(Tensor<2>) -> Tensor<2>,
) -> Tensor<D> {
    let mut dims = x.dims();
    let d_in = dims[D - 1];
    dims[D - 1] = d_out;
    f(x.reshape([-1, d_in as i32])).reshape(dims)
}

/// `linear.forward(x)` as one `[rows, d_in] @ [d_in, d_out]` product (see [`in_rows`]).
pub(crate) fn linear_rows<const D: usize>(linear: &Linear, x: Tensor<D>) -> Tensor<D> {
    in_rows(x, linear.weight.dims()[1], |x| linear.forward(x))
}

/// What can go wrong loading, saving or running a model; messages name the file and tensor.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Reading or writing a file failed, or a JSON file does not parse.
    #[error(transparent)]
    File(#[from] crate::io::IoError),
    /// A configuration the model cannot be built from.
    #[error("invalid model config: {0}")]
    Config(String),
    /// A checkpoint tensor is missing, misshapen, of an unknown name or unreadable.
    #[error("{path}: tensor `{tensor}`: {problem}")]
    Tensor {
        /// The checkpoint file (or folder, for a missing tensor).
        path: PathBuf,
        /// The tensor's name as stored in the checkpoint.
        tensor: String,
        /// What is wrong.
        problem: String,
    },
    /// A safetensors file cannot be parsed.
    #[error("{path}: not a readable safetensors file: {problem}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The tokenizer cannot be loaded or fails on an input.
    #[error("tokenizer {path}: {problem}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// An image cannot be read or processed.
    #[error("image {path}: {problem}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Inputs that do not fit the model (image token count, batch shapes, ...).
    #[error("{0}")]
    Input(String),
}

impl ModelError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, cause: std::io::Error) -> Self {
        ModelError::File(crate::io::IoError::Io { path: path.to_path_buf(), cause })
    }

    /// A JSON error in `path`.
    pub fn json(path: &Path, cause: serde_json::Error) -> Self {
        ModelError::File(crate::io::IoError::Json { path: path.to_path_buf(), line: None, cause })
    }
}
