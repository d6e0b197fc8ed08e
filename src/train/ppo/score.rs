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
use std::path::Path;

/// The world's ground truth of each prompt's image, looked up once when the run starts.
pub struct Scenes {
    by_prompt: Vec<Scene>,
}

impl Scenes {
    /// Reads `world`'s `scenes.json` and finds every prompt's scene; a prompt whose image the
    /// world does not hold is an error naming it.
    pub fn load(world: &Path, prompts: &[Prompt]) -> Result<Scenes, TrainError> {
        let by_path = crate::world::scenes_by_path(world)?;
        let by_prompt = prompts
            .iter()
            .map(|prompt| {
                let key = prompt.path.canonicalize().unwrap_or_else(|_| prompt.path.clone());
                by_path.get(&key).cloned().ok_or_else(|| TrainError::Data {
                    file: world.join("scenes.json"),
                    message: format!(
                        "no scene for {} (prompt {}): `world` must be the folder the PPO prompts were made in",
                        prompt.path.display(),
                        prompt.record.id
                    ),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Scenes { by_prompt })
    }

    /// The scene of prompt `p`.
    pub fn of(&self, p: usize) -> &Scene {
        &self.by_prompt[p]
    }

    /// The judge's verdict on `text` as the answer to prompt `p`.
    pub fn judge(&self, prompts: &[Prompt], p: usize, text: &str) -> Judgement {
        let question = prompts[p].record.conversations.first().map_or("", |t| t.value.as_str());
        judge::judge(self.of(p), question, text)
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
                .map(|(p, text)| Ok(oracle_score(&scenes.judge(prompts, *p, text), *weight) as f32))
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
