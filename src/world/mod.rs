//! The synthetic visual world: procedurally generated images with exact ground truth, and every
//! dataset and benchmark of the pipeline written from it in the field's formats.
//!
//! `generate` writes, into one folder (built under a temporary name and renamed when complete):
//!
//! | file | content |
//! |---|---|
//! | `images/NNNNNN.png` | RGB images, `size` x `size` |
//! | `scenes.json` | ground truth per image: objects (colour, shape, size, cell, centre, radius, pixel box), pairwise `left of` / `above` relations, split |
//! | `world.json` | the configuration, the class list with frequencies, the partner table, the lexicon (synonyms, plurals), statistics |
//! | `tokenizer.json` | Hugging Face tokenizer covering the world's language |
//! | `image_to_caption.json` | five short true partial captions per image and a dense one, the true description |
//! | `pretrain.json`, `pretrain_val.json` | caption records for feature alignment (LLaVA conversation JSON) |
//! | `sft.json`, `sft_val.json` | instruction records: description, caption, existence, counting, attribute, relation, multiple choice, multi-turn |
//! | `prefs_prompts.json` | prompts for preference collection, with reference answers and `captions`: the reward model's facts (`language::reward_facts`) |
//! | `ppo_prompts.json` | PPO prompts with `captions` (the same facts), `caption_type`, `length_bonus` |
//! | `eval.json` | held-out prompts with reference answers (descriptions for CHAIR, task questions) |
//! | `pope_{random,popular,adversarial}.jsonl` | POPE questions on held-out images |
//! | `mmhal.json` | MMHal-Bench-style questions on held-out images |
//!
//! Every random choice comes from a ChaCha stream keyed by (seed, purpose, image), so the same seed
//! gives byte-identical output whatever the thread count.

pub mod bench;
pub mod datasets;
pub mod language;
pub mod render;
pub mod scene;
pub mod tokenizer;

use crate::data::formats::{Conversation, MmhalRecord, PopeQuestion, PpoPrompt, Task, Turn};
use crate::io::{self, IoError};
use rand::SeedableRng;
use rand::distr::weighted::WeightedIndex;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use scene::{Class, Scene, SceneConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Everything that shapes a world. Defaults are the built-in world of `factrl demo`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorldConfig {
    /// Number of images.
    pub images: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Scene sampling: image size, object counts, co-occurrence and repetition.
    pub scene: SceneConfig,
    /// Answer priors of the language.
    pub language: language::LanguageConfig,
    /// Dataset knobs (the SFT hallucination rate among them).
    pub datasets: datasets::DatasetConfig,
    /// Shares of images per split; `train` takes what the others leave.
    pub splits: SplitShares,
    /// What the PPO prompts ask (absent from worlds made before it: those get the default).
    #[serde(default)]
    pub ppo_prompts: datasets::PpoMix,
    /// Images in each POPE file (POPE uses 500), at most the eligible held-out images.
    pub pope_images: usize,
    /// MMHal-style questions per type (MMHal-Bench has 12, 96 in all).
    pub mmhal_per_type: usize,
}

/// Shares of images held out for each split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitShares {
    /// Held-out SFT / pretraining loss.
    pub val: f64,
    /// Preference collection prompts.
    pub pref: f64,
    /// PPO prompts.
    pub ppo: f64,
    /// Evaluation (POPE, MMHal, CHAIR, task accuracy); never used in training.
    pub eval: f64,
}

impl Default for WorldConfig {
    fn default() -> Self {
        WorldConfig {
            images: 8000,
            seed: 0,
            scene: SceneConfig { size: 64, min_objects: 1, max_objects: 6, cooccurrence: 0.75, repeat: 0.3 },
            language: language::LanguageConfig {
                existence_yes_ratio: 0.6,
                hard_negative_share: 0.5,
                partner_negative_share: 0.2,
            },
            datasets: datasets::DatasetConfig {
                hallucination_rate: 0.15,
                multi_turn: 0.35,
                description_share: 0.6,
                description_length_bonus: -0.5,
            },
            splits: SplitShares { val: 0.05, pref: 0.12, ppo: 0.08, eval: 0.10 },
            ppo_prompts: datasets::PpoMix::default(),
            pope_images: 500,
            mmhal_per_type: 12,
        }
    }
}

/// Why a world could not be generated or read.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    /// A knob is out of range.
    #[error("invalid world configuration: {0}")]
    Config(String),
    /// The output folder holds something already.
    #[error("{0} already exists and is not empty (pass --force to replace it)")]
    Exists(PathBuf),
    /// Reading or writing a file failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// An image could not be encoded.
    #[error("{path}: {cause}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// The cause.
        cause: image::ImageError,
    },
}

impl WorldConfig {
    /// Checks every knob, naming the first one out of range.
    pub fn validate(&self) -> Result<(), WorldError> {
        let bad = |m: String| Err(WorldError::Config(m));
        let s = &self.scene;
        if !(24..=1024).contains(&s.size) {
            return bad(format!("size {} px is outside 24..=1024", s.size));
        }
        if s.min_objects < 1 || s.min_objects > s.max_objects || s.max_objects > 9 {
            return bad(format!(
                "objects per scene {}..={} must satisfy 1 <= min <= max <= 9",
                s.min_objects, s.max_objects
            ));
        }
        let probs = [
            ("cooccurrence", s.cooccurrence),
            ("repeat", s.repeat),
            ("existence_yes_ratio", self.language.existence_yes_ratio),
            ("hard_negative_share", self.language.hard_negative_share),
            ("partner_negative_share", self.language.partner_negative_share),
            ("hallucination_rate", self.datasets.hallucination_rate),
            ("multi_turn", self.datasets.multi_turn),
            ("description_share", self.datasets.description_share),
            ("ppo_prompts.description_share", self.ppo_prompts.description_share),
            ("ppo_prompts.existence_share", self.ppo_prompts.existence_share),
            ("ppo_prompts.existence.existence_yes_ratio", self.ppo_prompts.existence.existence_yes_ratio),
        ];
        for (name, p) in probs {
            if !(0.0..=1.0).contains(&p) {
                return bad(format!("{name} = {p} is not a probability in [0, 1]"));
            }
        }
        let p = &self.ppo_prompts;
        for (name, l) in [("", &self.language), ("ppo_prompts.existence.", &p.existence)] {
            let (hard, partner) = (l.hard_negative_share, l.partner_negative_share);
            if !(0.0..=1.0).contains(&hard) || !(0.0..=1.0).contains(&partner) || hard + partner > 1.0 {
                return bad(format!(
                    "{name}hard_negative_share + {name}partner_negative_share must be shares summing to at most 1"
                ));
            }
        }
        if p.description_share + p.existence_share > 1.0 || !(1..=8).contains(&p.prompts_per_image) {
            return bad("ppo_prompts: description_share + existence_share must be at most 1, prompts_per_image in 1..=8".into());
        }
        let sp = &self.splits;
        let held = [sp.val, sp.pref, sp.ppo, sp.eval];
        if held.iter().any(|f| !(0.0..=1.0).contains(f)) || held.iter().sum::<f64>() >= 1.0 {
            return bad("split shares must be in [0, 1] and leave some images for training".into());
        }
        let counts = self.split_counts();
        if let Some((split, _)) = Split::ALL.iter().zip(counts).find(|(_, n)| *n == 0) {
            return bad(format!(
                "{} images are too few: the {} split would be empty",
                self.images,
                split.name()
            ));
        }
        Ok(())
    }

    /// Images per split, in [`Split::ALL`] order.
    pub fn split_counts(&self) -> [usize; 5] {
        let n = self.images as f64;
        let sp = &self.splits;
        let [val, pref, ppo, eval] = [sp.val, sp.pref, sp.ppo, sp.eval].map(|f| (n * f).round() as usize);
        let train = self.images.saturating_sub(val + pref + ppo + eval);
        [train, val, pref, ppo, eval]
    }
}

/// Which part of the pipeline an image belongs to. Each image is in exactly one split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Pretraining and SFT.
    Train,
    /// Held-out loss of pretraining and SFT.
    Val,
    /// Preference collection.
    Pref,
    /// PPO prompts.
    Ppo,
    /// Evaluation only.
    Eval,
}

impl Split {
    /// All splits.
    pub const ALL: [Split; 5] = [Split::Train, Split::Val, Split::Pref, Split::Ppo, Split::Eval];

    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Pref => "pref",
            Split::Ppo => "ppo",
            Split::Eval => "eval",
        }
    }
}

/// A relation between two objects of a scene, by index.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Relation {
    /// Index of the subject object.
    pub subject: usize,
    /// "left of" or "above" (the other two directions are these reversed).
    pub relation: String,
    /// Index of the other object.
    pub object: usize,
}

/// The ground truth of one image, as `scenes.json` stores it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SceneRecord {
    /// Image id ("000042").
    pub id: String,
    /// Path relative to the world folder.
    pub image: String,
    /// Split.
    pub split: Split,
    /// Objects and background.
    #[serde(flatten)]
    pub scene: Scene,
    /// Every pairwise `left of` and `above` relation (by grid cell).
    pub relations: Vec<Relation>,
}

/// Pairwise relations of a scene.
pub fn relations(scene: &Scene) -> Vec<Relation> {
    let mut out = Vec::new();
    for (i, a) in scene.objects.iter().enumerate() {
        for (j, b) in scene.objects.iter().enumerate() {
            if a.cell.col < b.cell.col {
                out.push(Relation { subject: i, relation: "left of".into(), object: j });
            }
            if a.cell.row < b.cell.row {
                out.push(Relation { subject: i, relation: "above".into(), object: j });
            }
        }
    }
    out
}

/// What `generate` wrote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Images per split.
    pub split_images: BTreeMap<Split, usize>,
    /// SFT records (train split).
    pub sft_records: usize,
    /// SFT descriptions that mention an absent object.
    pub hallucinated_descriptions: usize,
    /// Their share of all SFT descriptions.
    pub hallucinated_share: f64,
    /// Share of "Yes." answers among SFT existence questions.
    pub existence_yes_share: f64,
    /// Questions per POPE file.
    pub pope_questions: usize,
    /// MMHal-style questions.
    pub mmhal_questions: usize,
}

/// The random stream of one purpose and image.
fn stream(seed: u64, purpose: u64, index: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&purpose.to_le_bytes());
    key[16..24].copy_from_slice(&index.to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

const SCENES: u64 = 1;
const SPLITS: u64 = 2;
const FILLS: u64 = 3;
const TEXTS: u64 = 4;
const POPE: u64 = 5;
const MMHAL: u64 = 6;

/// Everything written for one image, gathered in image order afterwards.
#[derive(Default)]
struct ImageTexts {
    pretrain: Option<Conversation>,
    sft: Vec<Conversation>,
    captions: Vec<String>,
    pref: Option<Conversation>,
    ppo: Vec<PpoPrompt>,
    eval: Vec<Conversation>,
    hallucinated: usize,
}

/// Generates a world into `out`. The folder is built beside `out` under a temporary name and renamed
/// into place only when complete; an existing non-empty `out` is replaced only with `force`.
pub fn generate(cfg: &WorldConfig, out: &Path, force: bool) -> Result<Stats, WorldError> {
    cfg.validate()?;
    let occupied = out.exists() && std::fs::read_dir(out).map_err(io::at(out))?.next().is_some();
    if occupied && !force {
        return Err(WorldError::Exists(out.to_path_buf()));
    }
    let name =
        out.file_name().ok_or_else(|| WorldError::Config(format!("{} has no folder name", out.display())))?;
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io::at(parent))?;
    let partial = parent.join(format!(".{}.partial", name.to_string_lossy()));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(io::at(&partial))?;
    }
    let result = write_world(cfg, &partial);
    match result {
        Ok(stats) => {
            if out.exists() {
                std::fs::remove_dir_all(out).map_err(io::at(out))?;
            }
            std::fs::rename(&partial, out).map_err(io::at(out))?;
            Ok(stats)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            Err(e)
        }
    }
}

/// Writes every file of the world into `dir`.
fn write_world(cfg: &WorldConfig, dir: &Path) -> Result<Stats, WorldError> {
    let images_dir = dir.join("images");
    std::fs::create_dir_all(&images_dir).map_err(io::at(&images_dir))?;
    let n = cfg.images;

    // 1. Scenes and splits.
    let weights =
        WeightedIndex::new(scene::class_weights()).map_err(|e| WorldError::Config(e.to_string()))?;
    let scenes: Vec<Scene> = (0..n)
        .into_par_iter()
        .map(|i| scene::sample_scene(&cfg.scene, &weights, &mut stream(cfg.seed, SCENES, i as u64)))
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut stream(cfg.seed, SPLITS, 0));
    let mut split = vec![Split::Train; n];
    let mut at = 0;
    for (s, count) in Split::ALL.iter().zip(cfg.split_counts()) {
        for &i in &order[at..at + count] {
            split[i] = *s;
        }
        at += count;
    }
    let ids: Vec<String> = (0..n).map(|i| format!("{i:06}")).collect();
    let paths: Vec<String> = ids.iter().map(|id| format!("images/{id}.png")).collect();

    // 2. Images.
    (0..n).into_par_iter().try_for_each(|i| {
        let mut rng = stream(cfg.seed, FILLS, i as u64);
        let fills: Vec<[u8; 3]> = scenes[i]
            .objects
            .iter()
            .map(|o| {
                o.colour
                    .rgb()
                    .map(|c| (c as i32 + rand::Rng::random_range(&mut rng, -10..=10)).clamp(0, 255) as u8)
            })
            .collect();
        let img = render::render(&scenes[i], &fills, cfg.scene.size);
        let path = dir.join(&paths[i]);
        img.save_with_format(&path, image::ImageFormat::Png)
            .map_err(|cause| WorldError::Image { path, cause })
    })?;

    // 3. Texts. The hallucination probability is raised to make up for descriptions that cannot
    // carry one (every partner present, or no free cell), so the overall share is as configured.
    let train: Vec<&Scene> = (0..n).filter(|&i| split[i] == Split::Train).map(|i| &scenes[i]).collect();
    let eligible = train.iter().filter(|s| language::can_hallucinate(s)).count().max(1) as f64
        / train.len().max(1) as f64;
    let p_hallucinate = cfg.datasets.hallucination_rate / eligible;
    let texts: Vec<ImageTexts> = (0..n)
        .into_par_iter()
        .map(|i| {
            let (id, image, s) = (&ids[i], &paths[i], &scenes[i]);
            let rng = &mut stream(cfg.seed, TEXTS, i as u64);
            let (dc, lc) = (&cfg.datasets, &cfg.language);
            let mut t = ImageTexts { captions: language::captions(s, rng), ..Default::default() };
            match split[i] {
                Split::Train | Split::Val => {
                    t.pretrain = Some(datasets::pretrain(id, image, s, rng));
                    t.sft = datasets::sft(
                        id,
                        image,
                        s,
                        if language::can_hallucinate(s) { p_hallucinate } else { 0.0 },
                        dc,
                        lc,
                        rng,
                    );
                    let truth = language::describe(s, None);
                    t.hallucinated = t
                        .sft
                        .iter()
                        .filter(|r| r.task == Some(Task::Description) && r.conversations[1].value != truth)
                        .count();
                }
                Split::Pref => t.pref = Some(datasets::preference(id, image, s, dc, lc, rng)),
                Split::Ppo => t.ppo = datasets::ppo(id, image, s, dc, &cfg.ppo_prompts, lc, rng),
                Split::Eval => t.eval = datasets::eval(id, image, s, lc, rng),
            }
            t
        })
        .collect();

    // 4. Benchmarks on held-out images.
    let held_out: Vec<(String, &Scene)> =
        (0..n).filter(|&i| split[i] == Split::Eval).map(|i| (paths[i].clone(), &scenes[i])).collect();
    let pope = bench::pope(&held_out, cfg.pope_images, &mut stream(cfg.seed, POPE, 0));
    let mmhal: Vec<MmhalRecord> =
        bench::mmhal(&held_out, cfg.mmhal_per_type, &mut stream(cfg.seed, MMHAL, 0));

    // 5. Files.
    let records: Vec<SceneRecord> = (0..n)
        .map(|i| SceneRecord {
            id: ids[i].clone(),
            image: paths[i].clone(),
            split: split[i],
            scene: scenes[i].clone(),
            relations: relations(&scenes[i]),
        })
        .collect();
    io::write_json(&dir.join("scenes.json"), &records)?;
    let split = &split;
    let in_split = move |s: Split| (0..n).filter(move |&i| split[i] == s);
    let gather = |s: Split, f: &dyn Fn(&ImageTexts) -> Vec<Conversation>| -> Vec<Conversation> {
        in_split(s).flat_map(|i| f(&texts[i])).collect()
    };
    let pretrain = |t: &ImageTexts| t.pretrain.clone().into_iter().collect();
    let sft = |t: &ImageTexts| t.sft.clone();
    io::write_json(&dir.join("pretrain.json"), &gather(Split::Train, &pretrain))?;
    io::write_json(&dir.join("pretrain_val.json"), &gather(Split::Val, &pretrain))?;
    let sft_train = gather(Split::Train, &sft);
    io::write_json(&dir.join("sft.json"), &sft_train)?;
    io::write_json(&dir.join("sft_val.json"), &gather(Split::Val, &sft))?;
    io::write_json(
        &dir.join("prefs_prompts.json"),
        &gather(Split::Pref, &|t| t.pref.clone().into_iter().collect()),
    )?;
    let ppo: Vec<PpoPrompt> = in_split(Split::Ppo).flat_map(|i| texts[i].ppo.clone()).collect();
    io::write_json(&dir.join("ppo_prompts.json"), &ppo)?;
    io::write_json(&dir.join("eval.json"), &gather(Split::Eval, &|t| t.eval.clone()))?;
    let captions: BTreeMap<&str, &Vec<String>> =
        (0..n).map(|i| (paths[i].as_str(), &texts[i].captions)).collect();
    io::write_json(&dir.join("image_to_caption.json"), &captions)?;
    for (setting, questions) in bench::PopeSetting::ALL.iter().zip(&pope) {
        io::write_jsonl::<PopeQuestion>(&dir.join(format!("pope_{}.jsonl", setting.name())), questions)?;
    }
    io::write_json(&dir.join("mmhal.json"), &mmhal)?;
    io::write_atomic(&dir.join("tokenizer.json"), tokenizer::tokenizer_json().as_bytes())?;

    let descriptions = sft_train.iter().filter(|r| r.task == Some(Task::Description)).count();
    let hallucinated: usize = in_split(Split::Train).map(|i| texts[i].hallucinated).sum();
    let existence: Vec<&Turn> =
        sft_train.iter().filter(|r| r.task == Some(Task::Existence)).map(|r| &r.conversations[1]).collect();
    let stats = Stats {
        split_images: Split::ALL.iter().zip(cfg.split_counts()).map(|(s, c)| (*s, c)).collect(),
        sft_records: sft_train.len(),
        hallucinated_descriptions: hallucinated,
        hallucinated_share: hallucinated as f64 / descriptions.max(1) as f64,
        existence_yes_share: existence.iter().filter(|t| t.value == "Yes.").count() as f64
            / existence.len().max(1) as f64,
        pope_questions: pope[0].len(),
        mmhal_questions: mmhal.len(),
    };
    io::write_json(&dir.join("world.json"), &WorldInfo::new(cfg, &stats))?;
    Ok(stats)
}

/// `world.json`: how the world was made and the facts about its language that evaluators need.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorldInfo {
    /// The configuration that produced the folder.
    pub config: WorldConfig,
    /// Object classes ("red circle") with their relative sampling weight.
    pub classes: BTreeMap<String, f64>,
    /// Pairs of classes that usually appear together.
    pub partners: Vec<[String; 2]>,
    /// For each shape, the words (singular and plural, synonyms included) that name it.
    pub shape_words: BTreeMap<String, Vec<String>>,
    /// Colour words.
    pub colours: Vec<String>,
    /// What was written.
    pub stats: Stats,
}

impl WorldInfo {
    fn new(cfg: &WorldConfig, stats: &Stats) -> WorldInfo {
        let weights = scene::class_weights();
        WorldInfo {
            config: cfg.clone(),
            classes: Class::all().map(|c| (c.name(), weights[c.index()])).collect(),
            partners: scene::PARTNERS.iter().map(|(a, b)| [a.name(), b.name()]).collect(),
            shape_words: scene::Shape::ALL
                .iter()
                .map(|s| {
                    let mut words = vec![s.name().to_string(), s.plural().to_string()];
                    words.extend(s.synonyms().iter().flat_map(|(a, b)| [a.to_string(), b.to_string()]));
                    (s.name().to_string(), words)
                })
                .collect(),
            colours: scene::Colour::ALL.iter().map(|c| c.name().to_string()).collect(),
            stats: stats.clone(),
        }
    }
}

/// Reads a world's ground truth (`scenes.json`).
pub fn load_scenes(dir: &Path) -> Result<Vec<SceneRecord>, IoError> {
    io::read_json(&dir.join("scenes.json"))
}

/// A world's scenes by canonical image path, so any relative spelling of a path finds its scene.
pub fn scenes_by_path(dir: &Path) -> Result<std::collections::HashMap<PathBuf, Scene>, IoError> {
    let abs = dir.canonicalize().map_err(io::at(dir))?;
    Ok(load_scenes(dir)?.into_iter().map(|r| (abs.join(&r.image), r.scene)).collect())
}

/// Reads a world's `world.json`.
pub fn load_info(dir: &Path) -> Result<WorldInfo, IoError> {
    io::read_json(&dir.join("world.json"))
}
