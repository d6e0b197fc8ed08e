//! The files between stages: LLaVA conversations, PPO prompts, POPE questions, MMHal records, and the
//! prompt templates every stage shares.

pub mod chat;
pub mod formats;
pub mod template;
