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

use std::path::{Path, PathBuf};

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
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        ModelError::File(crate::io::IoError::Io { path: path.to_path_buf(), source })
    }

    /// A JSON error in `path`.
    pub fn json(path: &Path, source: serde_json::Error) -> Self {
        ModelError::File(crate::io::IoError::Json { path: path.to_path_buf(), line: None, source })
    }
}
