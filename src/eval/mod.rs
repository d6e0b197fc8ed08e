//! Hallucination evaluation as the field measures it.

pub mod pope;
pub mod run;
