//! Scoring a rollout: the reward model's score of each response (or the oracle's, the world's
//! exact judge, as an upper bound), and the world's judge as a diagnostic that never enters the
//! reward unless the oracle is the scorer.

use super::math::oracle_score;
use super::rollout::Prompt;
use crate::eval::judge::{self, Judgement};
use crate::train::common::{ImageTable, TrainError};
use crate::train::reward::RewardFolder;
use crate::world::scene::Scene;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The world's ground truth by canonical image path.
pub struct Scenes {
    by_path: HashMap<PathBuf, Scene>,
    world: PathBuf,
}

impl Scenes {
    /// Reads `world`'s `scenes.json`.
    pub fn load(world: &Path) -> Result<Scenes, TrainError> {
        Ok(Scenes { by_path: crate::world::scenes_by_path(world)?, world: world.to_path_buf() })
    }

    /// The scene of a prompt's image; an error naming the image when the world has none.
    pub fn of(&self, prompt: &Prompt) -> Result<&Scene, TrainError> {
        let key = prompt.path.canonicalize().unwrap_or_else(|_| prompt.path.clone());
        self.by_path.get(&key).ok_or_else(|| TrainError::Data {
            file: self.world.join("scenes.json"),
            message: format!(
                "no scene for {} (prompt {}): `world` must be the folder the PPO prompts were made in",
                prompt.path.display(),
                prompt.record.id
            ),
        })
    }

    /// The judge's verdict on `text` as the answer to `prompt`.
    pub fn judge(&self, prompt: &Prompt, text: &str) -> Result<Judgement, TrainError> {
        let question = prompt.record.conversations.first().map_or("", |t| t.value.as_str());
        Ok(judge::judge(self.of(prompt)?, question, text))
    }
}

/// What scores a response.
pub enum Scorer {
    /// A reward model, with its own image table when its tower differs from the policy's.
    Model(Box<RewardFolder>, Option<ImageTable>),
    /// The world's exact judge ([`oracle_score`] with this helpfulness weight): an upper bound,
    /// never a result.
    Oracle(f64),
}

/// Scores of responses (prompt index, text), captions shuffled by `rng` for a reward model that
/// reads them. The oracle needs `scenes`.
pub fn scores(
    scorer: &Scorer,
    scenes: Option<&Scenes>,
    policy_table: &ImageTable,
    prompts: &[Prompt],
    items: &[(usize, String)],
    rng: &mut ChaCha8Rng,
) -> Result<Vec<f32>, TrainError> {
    match scorer {
        Scorer::Model(rm, table) => {
            rm_scores(rm, table.as_ref().unwrap_or(policy_table), prompts, items, rng)
        }
        Scorer::Oracle(weight) => {
            let scenes =
                scenes.ok_or_else(|| TrainError::Setting("reward = \"oracle\" needs `world`".into()))?;
            items
                .iter()
                .map(|(p, text)| Ok(oracle_score(&scenes.judge(&prompts[*p], text)?, *weight) as f32))
                .collect()
        }
    }
}

fn rm_scores(
    rm: &RewardFolder,
    table: &ImageTable,
    prompts: &[Prompt],
    items: &[(usize, String)],
    rng: &mut ChaCha8Rng,
) -> Result<Vec<f32>, TrainError> {
    let model = &rm.folder.model;
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(16) {
        let mut seqs = Vec::with_capacity(chunk.len());
        for (p, text) in chunk {
            let rec = &prompts[*p].record;
            let mut caps = rec.captions.clone();
            caps.shuffle(rng);
            seqs.push(rm.encode(&rec.conversations, text, Some(&caps))?);
        }
        let rows: Vec<usize> = chunk.iter().map(|(p, _)| prompts[*p].image).collect();
        let images = table.input(&rows, model.config.vision.image_size, &model.device());
        out.extend(rm.rewards(&seqs, images)?);
    }
    Ok(out)
}
