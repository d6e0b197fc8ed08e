//! The demo's report: the seed's table (Base, SFT, RLHF, Fact-RLHF) measured on the same tests,
//! the claims it must support checked against the numbers, and the training curves.
//!
//! Writes `report.json` (one row per model: the means over seeds, with their standard deviation
//! in `std` and the seed count in `seeds`), `report.md` and a self-contained `report.html` with
//! SVG plots ([`svg`]).

pub mod svg;

use crate::eval::run::EvalReport;
use crate::io::{self, IoError};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::Path;

/// The models of the table, in its order: key in `report.json`, label in the tables. Oracle-RL is
/// the same RL against the world's exact judge: an upper bound, never a result.
pub const MODELS: [(&str, &str); 5] = [
    ("base", "Base"),
    ("sft", "SFT"),
    ("rlhf", "RLHF"),
    ("fact_rlhf", "Fact-RLHF"),
    ("oracle_rl", "Oracle-RL (upper bound)"),
];

/// One model's evaluation on every seed.
#[derive(Clone, Debug)]
pub struct ModelResult {
    /// `base`, `sft`, `rlhf` or `fact_rlhf`.
    pub model: String,
    /// One evaluation per seed.
    pub seeds: Vec<EvalReport>,
}

/// A training curve: one or more series of (step, value) read from a run's `metrics.jsonl`.
#[derive(Clone, Debug)]
pub struct Curve {
    /// Plot title.
    pub title: String,
    /// Named series.
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

/// The row of `report.json` for one evaluation (the schema).
pub fn row(model: &str, r: &EvalReport) -> Value {
    json!({
        "model": model,
        "pope": r.pope,
        "chair_i": r.chair_i,
        "chair_s": r.chair_s,
        "object_recall": r.object_recall,
        "mmhal_score": r.mmhal_score,
        "mmhal_hallucination_rate": r.mmhal_hallucination_rate,
    })
}

/// Numeric leaves of a JSON tree by dotted path.
fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, f64>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        Value::Number(n) => {
            out.insert(prefix.to_string(), n.as_f64().unwrap_or(f64::NAN));
        }
        _ => {}
    }
}

/// The inverse of [`flatten`].
fn unflatten(values: &BTreeMap<String, f64>) -> Value {
    let mut root = Map::new();
    for (path, &x) in values {
        let mut node = &mut root;
        let parts: Vec<&str> = path.split('.').collect();
        for p in &parts[..parts.len() - 1] {
            node = node
                .entry(p.to_string())
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("paths of one tree nest consistently");
        }
        node.insert(parts[parts.len() - 1].to_string(), json!(x));
    }
    Value::Object(root)
}

/// Mean and sample standard deviation (0 for one value) of each leaf over the rows.
pub fn mean_and_std(rows: &[Value]) -> (BTreeMap<String, f64>, BTreeMap<String, f64>) {
    let mut columns: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in rows {
        let mut flat = BTreeMap::new();
        flatten("", r, &mut flat);
        for (k, v) in flat {
            columns.entry(k).or_default().push(v);
        }
    }
    let mut mean = BTreeMap::new();
    let mut std = BTreeMap::new();
    for (k, xs) in columns {
        let n = xs.len() as f64;
        let m = xs.iter().sum::<f64>() / n;
        let var =
            if xs.len() > 1 { xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
        mean.insert(k.clone(), m);
        std.insert(k, var.sqrt());
    }
    (mean, std)
}

/// False-positive rate of POPE adversarial, fp / (fp + tn): the hallucination the claims are
/// about (accuracy also moves with misses of present objects).
fn adversarial_fp_rate(flat: &BTreeMap<String, f64>) -> f64 {
    let fp = flat.get("pope.adversarial.fp").copied().unwrap_or(0.0);
    let tn = flat.get("pope.adversarial.tn").copied().unwrap_or(0.0);
    if fp + tn > 0.0 { fp / (fp + tn) } else { 0.0 }
}

/// One table cell: the mean, with the spread when there are several seeds.
struct Stat {
    mean: f64,
    std: f64,
}

/// The table's columns: label and how to read the value from a row's flattened means / stds.
const COLUMNS: [(&str, &str); 9] = [
    ("POPE adv. FP rate", "pope.adversarial.fp_rate"),
    ("POPE adv. acc.", "pope.adversarial.accuracy"),
    ("POPE adv. F1", "pope.adversarial.f1"),
    ("POPE rand. acc.", "pope.random.accuracy"),
    ("CHAIR_i", "chair_i"),
    ("CHAIR_s", "chair_s"),
    ("object recall", "object_recall"),
    ("MMHal score", "mmhal_score"),
    ("MMHal halluc. rate", "mmhal_hallucination_rate"),
];

/// Per model: its label, seed count, and the statistics of every column.
struct Table {
    rows: Vec<(String, String, usize, BTreeMap<String, Stat>)>,
}

impl Table {
    fn new(models: &[ModelResult]) -> Self {
        let rows = models
            .iter()
            .map(|m| {
                let per_seed: Vec<Value> = m
                    .seeds
                    .iter()
                    .map(|r| {
                        let mut v = row(&m.model, r);
                        let mut flat = BTreeMap::new();
                        flatten("", &v, &mut flat);
                        v["pope"]["adversarial"]["fp_rate"] = json!(adversarial_fp_rate(&flat));
                        v
                    })
                    .collect();
                let (mean, std) = mean_and_std(&per_seed);
                let stats = mean
                    .iter()
                    .map(|(k, &m)| (k.clone(), Stat { mean: m, std: std.get(k).copied().unwrap_or(0.0) }))
                    .collect();
                let label = MODELS.iter().find(|(k, _)| *k == m.model).map_or(m.model.as_str(), |(_, l)| l);
                (m.model.clone(), label.to_string(), m.seeds.len(), stats)
            })
            .collect();
        Table { rows }
    }

    fn get(&self, model: &str, key: &str) -> Option<f64> {
        self.rows.iter().find(|r| r.0 == model).and_then(|r| r.3.get(key)).map(|s| s.mean)
    }

    fn std(&self, model: &str, key: &str) -> f64 {
        self.rows.iter().find(|r| r.0 == model).and_then(|r| r.3.get(key)).map_or(0.0, |s| s.std)
    }

    /// The at-a-glance chart: hallucination (adversarial FP rate, CHAIR_i) and recall per model,
    /// error bars the spread over seeds.
    fn bars(&self) -> String {
        let series: Vec<String> = self.rows.iter().map(|r| r.1.clone()).collect();
        let groups: Vec<svg::BarGroup> = [
            ("POPE adv. FP rate", "pope.adversarial.fp_rate"),
            ("CHAIR_i", "chair_i"),
            ("object recall", "object_recall"),
        ]
        .iter()
        .map(|(label, key)| {
            (label.to_string(), self.rows.iter().map(|r| r.3.get(*key).map(|s| (s.mean, s.std))).collect())
        })
        .collect();
        svg::bar_chart("hallucination and recall by model (mean, sd over seeds)", &series, &groups)
    }

    fn html(&self) -> String {
        let mut s = String::from("<table>\n<tr><th>model</th><th>seeds</th>");
        for (label, _) in COLUMNS {
            s.push_str(&format!("<th>{}</th>", svg::escape(label)));
        }
        s.push_str("</tr>\n");
        for (_, label, n, stats) in &self.rows {
            s.push_str(&format!("<tr><th>{}</th><td>{n}</td>", svg::escape(label)));
            for (_, key) in COLUMNS {
                s.push_str(&format!("<td>{}</td>", cell(stats.get(key), *n)));
            }
            s.push_str("</tr>\n");
        }
        s.push_str("</table>\n");
        s
    }

    fn markdown(&self) -> String {
        let mut s = String::from("| model | seeds |");
        for (label, _) in COLUMNS {
            s.push_str(&format!(" {label} |"));
        }
        s.push_str("\n|---|---|");
        s.push_str(&"---|".repeat(COLUMNS.len()));
        s.push('\n');
        for (_, label, n, stats) in &self.rows {
            s.push_str(&format!("| {label} | {n} |"));
            for (_, key) in COLUMNS {
                s.push_str(&format!(" {} |", cell(stats.get(key), *n)));
            }
            s.push('\n');
        }
        s
    }
}

fn cell(stat: Option<&Stat>, seeds: usize) -> String {
    match stat {
        None => "n/a".into(),
        Some(s) if seeds > 1 => format!("{:.3} ± {:.3}", s.mean, s.std),
        Some(s) => format!("{:.3}", s.mean),
    }
}

/// The claims of the demo (issue 8) checked against the means; each line says what was measured.
pub fn claims(models: &[ModelResult]) -> Vec<String> {
    let t = Table::new(models);
    let fp = "pope.adversarial.fp_rate";
    let (Some(sft_fp), Some(sft_chair), Some(sft_recall)) =
        (t.get("sft", fp), t.get("sft", "chair_i"), t.get("sft", "object_recall"))
    else {
        return vec!["SFT was not evaluated; no claim can be checked.".into()];
    };
    let (Some(f_fp), Some(f_chair), Some(f_recall)) =
        (t.get("fact_rlhf", fp), t.get("fact_rlhf", "chair_i"), t.get("fact_rlhf", "object_recall"))
    else {
        return vec!["Fact-RLHF was not evaluated; no claim can be checked.".into()];
    };
    let verdict = |ok: bool| if ok { "holds" } else { "does NOT hold" };
    let mut out = vec![
        format!(
            "Fact-RLHF halves SFT's POPE adversarial false-positive rate: {} ({sft_fp:.3} -> {f_fp:.3}).",
            verdict(f_fp <= sft_fp / 2.0)
        ),
        format!(
            "Fact-RLHF halves SFT's CHAIR_i: {} ({sft_chair:.3} -> {f_chair:.3}).",
            verdict(f_chair <= sft_chair / 2.0)
        ),
        format!(
            "Fact-RLHF keeps object recall within 5% of SFT's: {} ({sft_recall:.3} -> {f_recall:.3}).",
            verdict((f_recall - sft_recall).abs() <= 0.05 * sft_recall)
        ),
    ];
    let f1 = "pope.adversarial.f1";
    if let (Some(sft_f1), Some(f_f1)) = (t.get("sft", f1), t.get("fact_rlhf", f1)) {
        out.push(format!(
            "Fact-RLHF's POPE adversarial F1 is no lower than SFT's: {} ({sft_f1:.3} -> {f_f1:.3}).",
            verdict(f_f1 >= sft_f1)
        ));
    }
    if let (Some(r_fp), Some(r_chair)) = (t.get("rlhf", fp), t.get("rlhf", "chair_i")) {
        // "Beats" means by more than one standard deviation across seeds (the larger of the two
        // models' spreads), so a difference within the seeds' noise does not count.
        let spread = |key: &str| t.std("rlhf", key).max(t.std("fact_rlhf", key));
        let (s_fp, s_chair) = (spread(fp), spread("chair_i"));
        out.push(format!(
            "Fact-RLHF beats standard RLHF on both by more than one standard deviation: {} (FP rate {r_fp:.3} vs {f_fp:.3}, sd {s_fp:.3}; CHAIR_i {r_chair:.3} vs {f_chair:.3}, sd {s_chair:.3}).",
            verdict(r_fp - f_fp > s_fp && r_chair - f_chair > s_chair)
        ));
    }
    if let (Some(o_fp), Some(o_chair)) = (t.get("oracle_rl", fp), t.get("oracle_rl", "chair_i")) {
        let halves = o_chair <= sft_chair / 2.0;
        out.push(format!(
            "Bound: RL against the world's exact judge (Oracle-RL, not a result) reaches FP rate {o_fp:.3} and CHAIR_i {o_chair:.3}; {}.",
            if halves {
                "it halves SFT's CHAIR_i, so where Fact-RLHF does not, the reward model is what falls short"
            } else {
                "it does not halve SFT's CHAIR_i, so the RL stage itself falls short at this budget"
            }
        ));
    }
    let seeds = models.iter().map(|m| m.seeds.len()).min().unwrap_or(0);
    if seeds < 3 {
        out.push(format!(
            "Only {seeds} seed(s): a difference between models is not a result until it holds over at least 3 seeds (`factrl demo --seeds 3`)."
        ));
    }
    out
}

/// Series `key` (dotted for nested values, e.g. `eval.accuracy`) of a `metrics.jsonl` against
/// `step`; lines without the key are skipped. A missing file gives an empty series: a stage that
/// did not run has no curve.
pub fn series(metrics: &Path, key: &str) -> Result<Vec<(f64, f64)>, IoError> {
    if !metrics.exists() {
        return Ok(Vec::new());
    }
    let lines: Vec<Value> = io::read_jsonl(metrics)?;
    let pointer = format!("/{}", key.replace('.', "/"));
    Ok(lines
        .iter()
        .filter_map(|l| Some((l.get("step")?.as_f64()?, l.pointer(&pointer)?.as_f64()?)))
        .collect())
}

/// Everything the report is made of.
#[derive(Clone, Debug)]
pub struct Report {
    /// Evaluations per model, in table order.
    pub models: Vec<ModelResult>,
    /// Training curves.
    pub curves: Vec<Curve>,
    /// Seconds per stage for each seed (`None` where a seed has no time for it), in pipeline order.
    pub timings: Vec<(String, Vec<Option<f64>>)>,
    /// Extra lines for the report (settings, reward-model accuracies, warnings).
    pub notes: Vec<String>,
    /// The seeds, in the order of `timings`' columns.
    pub seeds: Vec<u64>,
}

/// Each seed's seconds over all stages (the time a one-seed demo of that seed took), `None`
/// unless every stage of that seed has a time.
fn seed_totals(timings: &[(String, Vec<Option<f64>>)]) -> Vec<Option<f64>> {
    let seeds = timings.iter().map(|(_, t)| t.len()).max().unwrap_or(0);
    (0..seeds).map(|s| timings.iter().map(|(_, t)| t.get(s).copied().flatten()).sum()).collect()
}

/// The demo's time claim (issue 8: within 15 minutes on 2 cores), checked on every seed's total;
/// `None` without timings.
pub fn time_claim(timings: &[(String, Vec<Option<f64>>)]) -> Option<String> {
    let totals = seed_totals(timings);
    if totals.is_empty() {
        return None;
    }
    Some(match totals.iter().position(Option::is_none) {
        Some(s) => format!(
            "Every seed's stages finish within 15 minutes: not known (seed {s} has stages without a time)."
        ),
        None => {
            let longest = totals.iter().flatten().fold(0.0, |a: f64, &b| a.max(b));
            let verdict = if longest <= 900.0 { "holds" } else { "does NOT hold" };
            format!("Every seed's stages finish within 15 minutes: {verdict} (longest seed {longest:.0} s).")
        }
    })
}

/// The time table's rows: each stage's seconds per seed ("-" where a seed has none), then the
/// seeds' totals ("-" unless every stage has a time).
fn time_rows(timings: &[(String, Vec<Option<f64>>)]) -> Vec<(String, Vec<String>)> {
    let seeds = timings.iter().map(|(_, t)| t.len()).max().unwrap_or(0);
    let cell = |t: Option<f64>| t.map_or("-".to_string(), |s| format!("{s:.0}"));
    let mut rows: Vec<(String, Vec<String>)> = timings
        .iter()
        .map(|(stage, t)| (stage.clone(), (0..seeds).map(|s| cell(t.get(s).copied().flatten())).collect()))
        .collect();
    rows.push(("all stages".into(), seed_totals(timings).into_iter().map(cell).collect()));
    rows
}

/// Writes `report.json`, `report.md` and `report.html` into `out`; returns the markdown.
pub fn write(out: &Path, report: &Report) -> Result<String, IoError> {
    let rows: Vec<Value> = report
        .models
        .iter()
        .map(|m| {
            let per_seed: Vec<Value> = m.seeds.iter().map(|r| row(&m.model, r)).collect();
            let (mean, std) = mean_and_std(&per_seed);
            let mut v = unflatten(&mean);
            v["model"] = json!(m.model);
            v["std"] = unflatten(&std);
            v["seeds"] = json!(m.seeds.len());
            v
        })
        .collect();
    io::write_json(&out.join("report.json"), &rows)?;

    let table = Table::new(&report.models);
    let mut claims = claims(&report.models);
    claims.extend(time_claim(&report.timings));
    let mut md = String::from("# factrl demo report\n\n");
    md.push_str(
        "Models evaluated on the same held-out world benchmarks (mean ± standard deviation over seeds).\n\n",
    );
    md.push_str(&table.markdown());
    md.push_str("\n## Claims\n\n");
    for c in &claims {
        md.push_str(&format!("- {c}\n"));
    }
    if !report.notes.is_empty() {
        md.push_str("\n## Notes\n\n");
        for n in &report.notes {
            md.push_str(&format!("- {n}\n"));
        }
    }
    let times = time_rows(&report.timings);
    let seeds = times.first().map_or(0, |(_, t)| t.len());
    md.push_str("\n## Time per stage, seconds (2-core CPU unless noted)\n\n| stage |");
    let name = |s: usize| report.seeds.get(s).map_or(s.to_string(), u64::to_string);
    md.push_str(&(0..seeds).map(|s| format!(" seed {} |", name(s))).collect::<String>());
    md.push_str(&format!("\n|---|{}\n", "---|".repeat(seeds)));
    for (stage, cells) in &times {
        md.push_str(&format!("| {stage} | {} |\n", cells.join(" | ")));
    }
    io::write_atomic(&out.join("report.md"), md.as_bytes())?;

    let mut html = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>factrl demo report</title>\n<style>\
         body{font-family:sans-serif;max-width:1100px;margin:2em auto;}table{border-collapse:collapse;}\
         td,th{border:1px solid #ccc;padding:4px 8px;text-align:right;}svg{margin:8px;}</style></head><body>\n",
    );
    html.push_str("<h1>factrl demo report</h1>\n");
    html.push_str(&table.html());
    html.push_str(&table.bars());
    html.push_str("<h2>Claims</h2>\n<ul>\n");
    for c in claims.iter().chain(&report.notes) {
        html.push_str(&format!("<li>{}</li>\n", svg::escape(c)));
    }
    html.push_str("</ul>\n<h2>Time per stage, seconds</h2>\n<table>\n<tr><th>stage</th>");
    html.push_str(&(0..seeds).map(|s| format!("<th>seed {}</th>", name(s))).collect::<String>());
    html.push_str("</tr>\n");
    for (stage, cells) in &times {
        let tds: String = cells.iter().map(|c| format!("<td>{c}</td>")).collect();
        html.push_str(&format!("<tr><th>{}</th>{tds}</tr>\n", svg::escape(stage)));
    }
    html.push_str("</table>\n<h2>Training curves</h2>\n");
    for c in &report.curves {
        html.push_str(&svg::line_chart(c));
    }
    html.push_str("</body></html>\n");
    io::write_atomic(&out.join("report.html"), html.as_bytes())?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::pope::PopeMetrics;
    use std::path::PathBuf;

    fn report(fp: usize, chair_i: f64, recall: f64) -> EvalReport {
        let adv = PopeMetrics { fp, tn: 100 - fp, tp: 90, r#fn: 10, ..Default::default() };
        EvalReport {
            model: PathBuf::from("m"),
            pope: [("adversarial".to_string(), adv)].into_iter().collect(),
            false_positive_rate_by_kind: BTreeMap::new(),
            task_accuracy: BTreeMap::new(),
            descriptions: 10,
            chair_i,
            chair_s: 0.5,
            object_recall: recall,
            mmhal_score: 3.0,
            mmhal_hallucination_rate: 0.4,
        }
    }

    #[test]
    fn mean_and_std_over_seeds_by_hand() {
        let rows = vec![json!({"a": 1.0, "b": {"c": 2}}), json!({"a": 3.0, "b": {"c": 4}})];
        let (m, s) = mean_and_std(&rows);
        assert_eq!(m["a"], 2.0);
        assert_eq!(m["b.c"], 3.0);
        assert!((s["a"] - 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(unflatten(&m), json!({"a": 2.0, "b": {"c": 3.0}}));
    }

    #[test]
    fn claims_are_checked_against_the_numbers() {
        let m = |name: &str, r: Vec<EvalReport>| ModelResult { model: name.into(), seeds: r };
        let models = vec![
            m("sft", vec![report(40, 0.30, 0.80), report(40, 0.30, 0.80), report(40, 0.30, 0.80)]),
            m("rlhf", vec![report(30, 0.20, 0.80); 3]),
            m("fact_rlhf", vec![report(20, 0.14, 0.77); 3]),
        ];
        let c = claims(&models);
        assert!(c[0].contains("holds (0.400 -> 0.200)"), "{}", c[0]);
        assert!(c[1].contains("holds"), "{}", c[1]);
        assert!(c[2].contains("holds"), "{}", c[2]);
        assert!(c[3].contains("F1 is no lower than SFT's: holds"), "{}", c[3]);
        assert!(c[4].contains("more than one standard deviation: holds"), "{}", c[4]);
        assert_eq!(c.len(), 5);
        // Fact-RLHF's FP rates 0.10 / 0.30 / 0.20 (mean 0.20, sd 0.10) against RLHF's 0.30 (sd 0):
        // better by 0.10, not by more than one sd. An oracle row adds the bound's line.
        let spread = vec![report(10, 0.14, 0.77), report(30, 0.14, 0.77), report(20, 0.14, 0.77)];
        let mut noisy = vec![models[0].clone(), models[1].clone(), m("fact_rlhf", spread)];
        noisy.push(m("oracle_rl", vec![report(10, 0.1, 0.8); 3]));
        let c = claims(&noisy);
        assert!(c[4].contains("standard deviation: does NOT hold") && c[4].contains("sd 0.100"), "{}", c[4]);
        assert!(c[5].contains("Bound") && c[5].contains("the reward model is what falls short"), "{}", c[5]);
        let worse = vec![models[0].clone(), m("fact_rlhf", vec![report(30, 0.2, 0.5)])];
        let c = claims(&worse);
        assert!(c.iter().take(3).all(|l| l.contains("does NOT hold")), "{c:?}");
        assert!(c.last().unwrap().contains("Only 1 seed"));
    }

    #[test]
    fn the_time_claim_checks_the_longest_seed() {
        let t = |a: f64, b: f64| {
            vec![("sft".to_string(), vec![Some(a), Some(b)]), ("ppo".into(), vec![Some(100.0); 2])]
        };
        assert_eq!(
            time_claim(&t(700.0, 800.0)).unwrap(),
            "Every seed's stages finish within 15 minutes: holds (longest seed 900 s)."
        );
        assert!(time_claim(&t(700.0, 801.0)).unwrap().contains("does NOT hold (longest seed 901 s)"));
        assert_eq!(time_claim(&[]), None);
    }

    #[test]
    fn series_reads_nested_keys_and_skips_lines_without_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        std::fs::write(&p, "{\"step\":1,\"loss\":2.0}\n{\"step\":2,\"eval\":{\"accuracy\":0.5}}\n").unwrap();
        assert_eq!(series(&p, "loss").unwrap(), vec![(1.0, 2.0)]);
        assert_eq!(series(&p, "eval.accuracy").unwrap(), vec![(2.0, 0.5)]);
        assert!(series(&dir.path().join("none.jsonl"), "loss").unwrap().is_empty());
    }

    #[test]
    fn report_files_are_written_with_one_row_per_model() {
        let dir = tempfile::tempdir().unwrap();
        let models = vec![ModelResult { model: "sft".into(), seeds: vec![report(40, 0.3, 0.8)] }];
        let r = Report {
            models,
            curves: vec![Curve {
                title: "loss".into(),
                series: vec![("sft".into(), vec![(1.0, 2.0), (2.0, 1.0)])],
            }],
            timings: vec![
                ("sft".into(), vec![Some(12.0), Some(30.4)]),
                ("ppo".into(), vec![Some(3.0), None]),
            ],
            notes: vec!["<b>".into()],
            seeds: vec![0, 1],
        };
        let md = write(dir.path(), &r).unwrap();
        assert!(md.contains("| SFT | 1 | 0.400 |"), "{md}");
        assert!(
            md.contains("| stage | seed 0 | seed 1 |\n|---|---|---|\n| sft | 12 | 30 |\n| ppo | 3 | - |\n"),
            "{md}"
        );
        assert!(md.contains("| all stages | 15 | - |"), "{md}");
        assert!(md.contains("within 15 minutes: not known (seed 1 has stages without a time)"), "{md}");
        let rows: Vec<Value> = io::read_json(&dir.path().join("report.json")).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["model"], "sft");
        assert_eq!(rows[0]["pope"]["adversarial"]["fp"], 40.0);
        assert_eq!(rows[0]["chair_i"], 0.3);
        let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
        assert!(html.contains("<svg") && html.contains("&lt;b&gt;") && !html.contains("<b>"));
    }
}
