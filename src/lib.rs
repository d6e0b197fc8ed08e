//! factrl: factually augmented RLHF for vision-language models.
//!
//! One module per pipeline stage; each stage reads and writes documented files so it can run alone.
#![deny(missing_docs)]

pub mod backend;
pub mod cli;
pub mod data;
pub mod eval;
pub mod feedback;
pub mod io;
pub mod model;
pub mod train;
pub mod world;
