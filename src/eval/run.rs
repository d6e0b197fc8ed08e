//! `factrl eval run`: a model answers the world's held-out benchmarks, and the answers are scored.
//!
//! Writes into the output folder: `pope_{setting}_answers.jsonl` (LLaVA's `{question_id, text}`),
//! `eval_answers.jsonl` (every held-out prompt with the model's answer, the reference and the
//! judge's verdict), `mmhal_answers.jsonl` (with the 0-6 score) and `metrics.json`.

use super::pope::{self, PopeMetrics};
use super::{chair, judge};
use crate::backend::inference_device;
use crate::data::chat;
use crate::data::formats::{Conversation, MmhalRecord, PopeQuestion, Task, YesNo};
use crate::io::{self, IoError};
use crate::model::ModelError;
use crate::model::generate::SamplingConfig;
use crate::model::jobs::ModelFolder;
use crate::world::bench::PopeSetting;
use crate::world::language;
use crate::world::scene::AbsentKind;
use crate::world::{self, SceneRecord};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Why an evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A file.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The model.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A benchmark file that does not fit the world.
    #[error("{0}")]
    Data(String),
}

/// Evaluation settings.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// At most this many questions per POPE file and prompts from `eval.json` (all if `None`).
    pub limit: Option<usize>,
    /// Prompts generated together.
    pub batch: usize,
    /// Longest answer, tokens.
    pub max_new_tokens: usize,
}

/// `metrics.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalReport {
    /// The model folder.
    pub model: PathBuf,
    /// POPE per setting.
    pub pope: BTreeMap<String, PopeMetrics>,
    /// Share of "yes" to absent objects, by how the absent object relates to the image, over all
    /// three POPE files: language-prior hallucination (partner) versus weak vision (same colour,
    /// same shape).
    pub false_positive_rate_by_kind: BTreeMap<AbsentKind, f64>,
    /// Accuracy of the short answers in `eval.json` per task, judged against the ground truth.
    pub task_accuracy: BTreeMap<String, f64>,
    /// Number of descriptions generated.
    pub descriptions: usize,
    /// Hallucinated object mentions / all object mentions, pooled over the descriptions.
    pub chair_i: f64,
    /// Share of descriptions with at least one hallucinated object.
    pub chair_s: f64,
    /// Mean share of the present object classes a description names (helpfulness).
    pub object_recall: f64,
    /// Mean MMHal-style score (0-6) by the rule-based judge.
    pub mmhal_score: f64,
    /// Share of MMHal answers scored below 3 (with hallucination).
    pub mmhal_hallucination_rate: f64,
}

/// Greedy answers to prompts (`<image>\n{question}` in the vicuna_v1 template), one per item.
fn answer(
    folder: &ModelFolder,
    items: &[(PathBuf, String)],
    opts: &EvalOptions,
) -> Result<Vec<String>, EvalError> {
    let sampling =
        SamplingConfig { max_new_tokens: opts.max_new_tokens, temperature: 0.0, ..SamplingConfig::default() };
    let prompts: Vec<(Option<PathBuf>, String)> = items
        .iter()
        .map(|(image, q)| (Some(image.clone()), chat::prompt(&format!("<image>\n{q}"))))
        .collect();
    Ok(folder
        .generate_all(&prompts, &sampling, opts.batch)?
        .into_iter()
        .map(|(text, _)| text.trim().to_string())
        .collect())
}

/// Runs every benchmark of the world on the model.
pub fn run(model: &Path, world_dir: &Path, out: &Path, opts: &EvalOptions) -> Result<EvalReport, EvalError> {
    std::fs::create_dir_all(out).map_err(io::at(out))?;
    let folder = ModelFolder::load(model, &inference_device())?;
    let scenes: HashMap<String, SceneRecord> =
        world::load_scenes(world_dir)?.into_iter().map(|r| (r.image.clone(), r)).collect();
    let limit = opts.limit.unwrap_or(usize::MAX);

    // 1. POPE, three settings.
    let mut report = EvalReport {
        model: model.to_path_buf(),
        pope: BTreeMap::new(),
        false_positive_rate_by_kind: BTreeMap::new(),
        task_accuracy: BTreeMap::new(),
        descriptions: 0,
        chair_i: 0.0,
        chair_s: 0.0,
        object_recall: 0.0,
        mmhal_score: 0.0,
        mmhal_hallucination_rate: 0.0,
    };
    let scene_of = |image: &str, file: &Path| {
        scenes
            .get(image)
            .map(|r| &r.scene)
            .ok_or_else(|| EvalError::Data(format!("{}: {image} is not in scenes.json", file.display())))
    };
    let mut by_kind: BTreeMap<AbsentKind, (usize, usize)> = BTreeMap::new();
    for setting in PopeSetting::ALL {
        let file = world_dir.join(format!("pope_{}.jsonl", setting.name()));
        let questions: Vec<PopeQuestion> = io::read_jsonl(&file)?.into_iter().take(limit).collect();
        let items: Vec<(PathBuf, String)> =
            questions.iter().map(|q| (world_dir.join(&q.image), q.text.clone())).collect();
        let texts = answer(&folder, &items, opts)?;
        let lines: Vec<serde_json::Value> = questions
            .iter()
            .zip(&texts)
            .map(|(q, t)| serde_json::json!({"question_id": q.question_id, "text": t}))
            .collect();
        io::write_jsonl(&out.join(format!("pope_{}_answers.jsonl", setting.name())), &lines)?;
        let predictions: Vec<YesNo> = texts.iter().map(|t| pope::parse_answer(t)).collect();
        let labels: Vec<YesNo> = questions.iter().map(|q| q.label).collect();
        report.pope.insert(setting.name().to_string(), pope::score(&labels, &predictions));
        for (q, p) in questions.iter().zip(&predictions).filter(|(q, _)| q.label == YesNo::No) {
            let scene = &scenes
                .get(&q.image)
                .ok_or_else(|| {
                    EvalError::Data(format!("{}: {} is not in scenes.json", file.display(), q.image))
                })?
                .scene;
            let kind = language::pope_class(&q.text).and_then(|c| scene.absent_kind(c)).ok_or_else(|| {
                EvalError::Data(format!(
                    "{}: question {} does not ask about an absent object",
                    file.display(),
                    q.question_id
                ))
            })?;
            let e = by_kind.entry(kind).or_default();
            e.0 += (*p == YesNo::Yes) as usize;
            e.1 += 1;
        }
    }
    report.false_positive_rate_by_kind =
        by_kind.into_iter().map(|(k, (fp, n))| (k, fp as f64 / n.max(1) as f64)).collect();

    // 2. Held-out prompts: descriptions and short questions.
    let records: Vec<Conversation> =
        io::read_json::<Vec<Conversation>>(&world_dir.join("eval.json"))?.into_iter().take(limit).collect();
    let items: Vec<(PathBuf, String)> = records
        .iter()
        .map(|r| {
            (world_dir.join(&r.image), r.conversations[0].value.trim_start_matches("<image>\n").to_string())
        })
        .collect();
    let texts = answer(&folder, &items, opts)?;
    let eval_file = world_dir.join("eval.json");
    let mut right: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut captions = Vec::new();
    let mut lines = Vec::new();
    for ((r, (_, question)), t) in records.iter().zip(&items).zip(&texts) {
        let scene = scene_of(&r.image, &eval_file)?;
        let reference = r.conversations.get(1).map(|t| t.value.as_str()).unwrap_or("");
        let task = r.task.map(|t| t.name()).unwrap_or("other").to_string();
        let verdict = judge::judge(scene, question, t);
        lines.push(serde_json::json!({"id": r.id, "task": task, "question": question, "answer": t, "reference": reference, "correct": verdict.correct, "hallucinations": verdict.hallucinations.total()}));
        if r.task == Some(Task::Description) {
            captions.push(chair::chair(scene, t));
        } else {
            let e = right.entry(task).or_default();
            e.0 += verdict.correct.unwrap_or(false) as usize;
            e.1 += 1;
        }
    }
    io::write_jsonl(&out.join("eval_answers.jsonl"), &lines)?;
    report.task_accuracy = right.into_iter().map(|(k, (c, n))| (k, c as f64 / n.max(1) as f64)).collect();
    let summary = chair::summarize(&captions);
    report.descriptions = captions.len();
    (report.chair_i, report.chair_s, report.object_recall) =
        (summary.chair_i, summary.chair_s, summary.recall);

    // 3. MMHal-style questions, scored 0-6 by the rule-based judge.
    let mmhal_file = world_dir.join("mmhal.json");
    let mmhal: Vec<MmhalRecord> = io::read_json(&mmhal_file)?;
    let items: Vec<(PathBuf, String)> =
        mmhal.iter().map(|m| (world_dir.join(&m.image_src), m.question.clone())).collect();
    let texts = answer(&folder, &items, opts)?;
    let mut scores = Vec::new();
    let mut lines = Vec::new();
    for (m, t) in mmhal.iter().zip(&texts) {
        let score = judge::mmhal_score(&judge::judge(scene_of(&m.image_src, &mmhal_file)?, &m.question, t));
        lines.push(serde_json::json!({"question_type": m.question_type, "question": m.question, "gt_answer": m.gt_answer, "model_answer": t, "score": score}));
        scores.push(score);
    }
    io::write_jsonl(&out.join("mmhal_answers.jsonl"), &lines)?;
    let n = scores.len().max(1) as f64;
    report.mmhal_score = scores.iter().map(|&s| s as f64).sum::<f64>() / n;
    report.mmhal_hallucination_rate = scores.iter().filter(|&&s| s < 3).count() as f64 / n;
    io::write_json(&out.join("metrics.json"), &report)?;
    Ok(report)
}
