//! Hallucination evaluation as the field measures it.

pub mod mentions;
pub mod pope;
