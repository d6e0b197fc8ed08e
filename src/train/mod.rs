//! Training: the machinery every algorithm shares (config, schedule, run folder) and one file per
//! algorithm.

pub mod clip;
pub mod common;
pub mod config;
pub mod dpo;
pub mod optim;
pub mod ppo;
pub mod reward;
pub mod run;
pub mod schedule;
pub mod sft;
