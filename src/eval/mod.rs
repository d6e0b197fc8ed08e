//! Hallucination evaluation as the field measures it, and a ground-truth judge for the world.

pub mod chair;
pub mod claims;
pub mod grade;
pub mod judge;
pub mod mentions;
pub mod pope;
pub mod question;
pub mod run;
