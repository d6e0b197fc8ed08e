//! The training and prompt datasets, one writer per split, in LLaVA's conversation format.

use super::language::{self as lang, Qa};
use super::scene::Scene;
use crate::data::formats::{Conversation, PpoPrompt, Task, Turn};
use rand::Rng;
use rand::seq::IndexedRandom;

/// Knobs of the datasets.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DatasetConfig {
    /// Share of SFT descriptions that mention one plausible absent object (the usual partner of a
    /// present one), as instruction data written by a text-only model does.
    pub hallucination_rate: f64,
    /// Probability that an SFT image also gets a multi-turn conversation.
    pub multi_turn: f64,
    /// Share of preference and PPO prompts that ask for a detailed description (the rest ask short
    /// questions).
    pub description_share: f64,
    /// `length_bonus` multiplier of description PPO prompts (negative rewards length, as LLaVA-RLHF's
    /// -0.5 does); short-answer prompts get 1.0, which penalises length.
    pub description_length_bonus: f64,
}

/// The PPO prompts' mix: RL moves what it is asked about, so the prompts are descriptions (where
/// CHAIR is measured) and existence questions with a balanced truth whose "No" questions are of the
/// hard kinds (POPE's false positives), not the preference prompts' mix.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PpoMix {
    /// Prompts per PPO image, each drawn from the mix.
    pub prompts_per_image: usize,
    /// Share of description prompts.
    pub description_share: f64,
    /// Share of existence questions; the rest are the other short questions.
    pub existence_share: f64,
    /// The existence questions' share of "Yes" truths and kinds of negatives.
    pub existence: lang::LanguageConfig,
}

impl Default for PpoMix {
    fn default() -> Self {
        PpoMix {
            prompts_per_image: 2,
            description_share: 0.5,
            existence_share: 0.5,
            existence: lang::LanguageConfig {
                existence_yes_ratio: 0.5,
                hard_negative_share: 0.6,
                partner_negative_share: 0.3,
            },
        }
    }
}

/// A question as the first human turn: `<image>\n{q}`.
fn first(q: &str) -> Turn {
    Turn::human(format!("<image>\n{q}"))
}

/// One of a list of instruction wordings.
fn pick<'a>(wordings: &[&'a str; 3], rng: &mut impl Rng) -> &'a str {
    wordings.choose(rng).copied().unwrap_or(wordings[0])
}

/// A single-turn record.
fn record(id: String, image: &str, q: &str, a: &str, task: Task) -> Conversation {
    Conversation {
        id,
        image: image.to_string(),
        conversations: vec![first(q), Turn::gpt(a)],
        task: Some(task),
        captions: None,
    }
}

/// One short question of a random kind (no description).
fn short_question(scene: &Scene, lc: &lang::LanguageConfig, rng: &mut impl Rng) -> Qa {
    match rng.random_range(0..9) {
        0..=2 => lang::existence(scene, lc, rng),
        3 | 4 => lang::counting(scene, rng),
        5 | 6 => lang::attribute(scene, rng),
        _ => lang::relation(scene, rng),
    }
}

/// Pretraining record: a short caption with sizes, for feature alignment.
pub fn pretrain(id: &str, image: &str, scene: &Scene, rng: &mut impl Rng) -> Conversation {
    let objects: Vec<_> = scene.objects.iter().collect();
    let q = pick(&lang::CAPTION, rng);
    record(format!("{id}-caption"), image, q, &lang::caption(&objects, true), Task::Caption)
}

/// SFT records of one image: a detailed description (with the configured chance of a partner
/// hallucination, `p_hallucinate` already corrected for images that have no absent partner), an
/// existence question, one more task, and sometimes a multi-turn conversation.
pub fn sft(
    id: &str,
    image: &str,
    scene: &Scene,
    p_hallucinate: f64,
    dc: &DatasetConfig,
    lc: &lang::LanguageConfig,
    rng: &mut impl Rng,
) -> Vec<Conversation> {
    let extra = if rng.random_bool(p_hallucinate.clamp(0.0, 1.0)) {
        lang::plausible_absent(scene, rng)
    } else {
        None
    };
    let describe = pick(&lang::DESCRIBE, rng);
    let mut out = vec![record(
        format!("{id}-description"),
        image,
        describe,
        &lang::describe(scene, extra.as_ref()),
        Task::Description,
    )];
    let e = lang::existence(scene, lc, rng);
    out.push(record(format!("{id}-existence"), image, &e.question, &e.answer, e.task));
    let other = match rng.random_range(0..6) {
        0 => lang::counting(scene, rng),
        1 => lang::attribute(scene, rng),
        2 => lang::relation(scene, rng),
        3 | 4 => lang::multiple_choice(scene, rng),
        _ => {
            let objects: Vec<_> = scene.objects.iter().collect();
            let q = pick(&lang::CAPTION, rng);
            Qa {
                question: q.into(),
                answer: lang::caption(&objects, false),
                task: Task::Caption,
                check: Default::default(),
            }
        }
    };
    out.push(record(
        format!("{id}-{}", other.task.name()),
        image,
        &other.question,
        &other.answer,
        other.task,
    ));
    if rng.random_bool(dc.multi_turn) {
        let turns = rng.random_range(2..=3);
        let mut conv = Vec::new();
        for t in 0..turns {
            let qa = short_question(scene, lc, rng);
            conv.push(if t == 0 { first(&qa.question) } else { Turn::human(qa.question) });
            conv.push(Turn::gpt(qa.answer));
        }
        out.push(Conversation {
            id: format!("{id}-multi_turn"),
            image: image.into(),
            conversations: conv,
            task: Some(Task::MultiTurn),
            captions: None,
        });
    }
    out
}

/// A prompt for preference collection or PPO: a description request or a short question.
fn prompt_qa(scene: &Scene, dc: &DatasetConfig, lc: &lang::LanguageConfig, rng: &mut impl Rng) -> Qa {
    if rng.random_bool(dc.description_share) { description_qa(scene, rng) } else { other_qa(scene, lc, rng) }
}

fn description_qa(scene: &Scene, rng: &mut impl Rng) -> Qa {
    let q = pick(&lang::DESCRIBE, rng);
    Qa {
        question: q.into(),
        answer: lang::describe(scene, None),
        task: Task::Description,
        check: Default::default(),
    }
}

/// A short question of any kind but description.
fn other_qa(scene: &Scene, lc: &lang::LanguageConfig, rng: &mut impl Rng) -> Qa {
    if rng.random_bool(0.15) { lang::multiple_choice(scene, rng) } else { short_question(scene, lc, rng) }
}

/// A preference prompt: the question with a correct reference answer as the gpt turn (which sampled
/// responses replace, as in LLaVA-Human-Preference-10K), and the reward model's facts
/// ([`lang::reward_facts`]).
pub fn preference(
    id: &str,
    image: &str,
    scene: &Scene,
    dc: &DatasetConfig,
    lc: &lang::LanguageConfig,
    rng: &mut impl Rng,
) -> Conversation {
    let qa = prompt_qa(scene, dc, lc, rng);
    Conversation {
        captions: Some(lang::reward_facts(scene, &qa)),
        ..record(format!("{id}-pref"), image, &qa.question, &qa.answer, qa.task)
    }
}

/// A PPO prompt with the reward model's facts ([`lang::reward_facts`]), its symbolic check and its
/// length-bonus multiplier.
pub fn ppo(
    id: &str,
    image: &str,
    scene: &Scene,
    dc: &DatasetConfig,
    mix: &PpoMix,
    lc: &lang::LanguageConfig,
    rng: &mut impl Rng,
) -> Vec<PpoPrompt> {
    (0..mix.prompts_per_image)
        .map(|k| {
            let roll: f64 = rng.random();
            let qa = if roll < mix.description_share {
                description_qa(scene, rng)
            } else if roll < mix.description_share + mix.existence_share {
                lang::existence(scene, &mix.existence, rng)
            } else {
                other_qa(scene, lc, rng)
            };
            let length_bonus = if qa.task == Task::Description { dc.description_length_bonus } else { 1.0 };
            PpoPrompt {
                id: if k == 0 { format!("{id}-ppo") } else { format!("{id}-ppo-{k}") },
                image: image.to_string(),
                captions: lang::reward_facts(scene, &qa),
                conversations: vec![first(&qa.question), Turn::gpt(qa.answer)],
                caption_type: qa.check,
                length_bonus,
                task: Some(qa.task),
            }
        })
        .collect()
}

/// Held-out evaluation prompts of one image: a description request and one question of each short
/// kind, with reference answers (for CHAIR, recall and task accuracies).
pub fn eval(
    id: &str,
    image: &str,
    scene: &Scene,
    lc: &lang::LanguageConfig,
    rng: &mut impl Rng,
) -> Vec<Conversation> {
    let mut out = vec![record(
        format!("{id}-description"),
        image,
        lang::DESCRIBE[0],
        &lang::describe(scene, None),
        Task::Description,
    )];
    for qa in [
        lang::counting(scene, rng),
        lang::attribute(scene, rng),
        lang::relation(scene, rng),
        lang::multiple_choice(scene, rng),
        lang::existence(scene, lc, rng),
    ] {
        out.push(record(format!("{id}-{}", qa.task.name()), image, &qa.question, &qa.answer, qa.task));
    }
    out
}
