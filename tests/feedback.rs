//! Preference collection as a user runs it: `factrl collect` on a tiny model, `factrl annotate auto`
//! on a small world.

use factrl::data::formats::Task;
use factrl::feedback::auto::{self, AutoOptions};
use factrl::feedback::{Candidate, Flag, Preference};
use factrl::world::scene::Class;
use factrl::world::{self, WorldConfig};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

fn factrl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_factrl")).args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = factrl(args);
    assert!(out.status.success(), "factrl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn tiny_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llava/base")
}

/// Two prompts (one multi-turn) in `data/`, their images in `data/img/`.
fn write_prompts(dir: &Path) -> PathBuf {
    let img = dir.join("data/img");
    std::fs::create_dir_all(&img).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llava/images");
    std::fs::copy(fixture.join("odd23x19.png"), img.join("a.png")).unwrap();
    std::fs::copy(fixture.join("square16.png"), img.join("b.png")).unwrap();
    let prompts = json!([
        {"id": "p1", "image": "img/a.png", "task": "existence",
         "conversations": [{"from": "human", "value": "<image>\nwhat is here ?"}, {"from": "gpt", "value": "a red square ."}]},
        {"id": "p2", "image": "img/b.png", "captions": ["a", "b"],
         "conversations": [{"from": "human", "value": "<image>\nwhat"}, {"from": "gpt", "value": "a"},
                           {"from": "human", "value": "is it red ?"}, {"from": "gpt", "value": "yes"}]}
    ]);
    let path = dir.join("data/prompts.json");
    std::fs::write(&path, serde_json::to_string_pretty(&prompts).unwrap()).unwrap();
    path
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn collect_samples_k_responses_to_the_open_conversation() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts = write_prompts(tmp.path());
    let model = tiny_model();
    let run = |name: &str, extra: &[&str]| -> Vec<Candidate> {
        let out = tmp.path().join("out").join(name);
        let mut args = vec!["collect", "--policy", s(&model), "--prompts", s(&prompts), "--output", s(&out)];
        args.extend(extra);
        ok(&args);
        serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap()
    };
    let sampled =
        run("c.json", &["--samples", "3", "--temperature", "1.0", "--max-new-tokens", "6", "--seed", "5"]);
    let source: Vec<Candidate> = serde_json::from_slice(&std::fs::read(&prompts).unwrap()).unwrap();
    assert_eq!(sampled.len(), 2);
    for (c, p) in sampled.iter().zip(&source) {
        assert_eq!(
            (&c.id, &c.conversations, &c.task, &c.captions),
            (&p.id, &p.conversations, &p.task, &p.captions)
        );
        assert_eq!(c.responses.len(), 3);
        // The image path now starts from the candidates file's folder.
        assert_eq!(c.image, format!("../data/{}", p.image));
        assert!(tmp.path().join("out").join(&c.image).exists());
    }
    // Seeded: the same seed gives the same file, another seed other responses.
    let again =
        run("c2.json", &["--samples", "3", "--temperature", "1.0", "--max-new-tokens", "6", "--seed", "5"]);
    assert_eq!(sampled, again);
    let other =
        run("c3.json", &["--samples", "3", "--temperature", "1.0", "--max-new-tokens", "6", "--seed", "6"]);
    assert_ne!(sampled, other);

    // Near-zero temperature is greedy: the responses are `factrl generate`'s greedy answers to the
    // conversation up to its last human turn in the vicuna_v1 template (the reference left out).
    let greedy =
        run("g.json", &["--samples", "2", "--temperature", "1e-6", "--max-new-tokens", "6", "--batch", "1"]);
    let expected = [
        "USER: <image>\nwhat is here ? ASSISTANT:",
        "USER: <image>\nwhat ASSISTANT: a</s>USER: is it red ? ASSISTANT:",
    ];
    for ((c, p), prompt) in greedy.iter().zip(&source).zip(expected) {
        let input = tmp.path().join("data/gen.jsonl");
        let output = tmp.path().join("data/gen_out.jsonl");
        std::fs::write(&input, json!({"image": p.image, "prompt": prompt}).to_string()).unwrap();
        ok(&[
            "generate",
            "--model",
            s(&tiny_model()),
            "--input",
            s(&input),
            "--output",
            s(&output),
            "--max-new-tokens",
            "6",
        ]);
        let line: Value = serde_json::from_str(std::fs::read_to_string(&output).unwrap().trim()).unwrap();
        let text = line["text"].as_str().unwrap().trim();
        assert_eq!(c.responses, [text, text], "prompt {prompt:?}");
    }
}

#[test]
fn collect_refuses_bad_prompts_and_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts = write_prompts(tmp.path());
    let out = tmp.path().join("c.json");
    let model = tiny_model();
    let base = ["collect", "--policy", s(&model), "--prompts", s(&prompts), "--output", s(&out)];
    let r = factrl(&[&base[..], &["--samples", "1"]].concat());
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("--samples must be at least 2"));
    std::fs::write(&prompts, "[{\"id\": \"x\", \"image\": \"img/a.png\",\n \"conversations\": [{\"from\": \"robot\", \"value\": \"hi\"}]}]").unwrap();
    let r = factrl(&base);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert!(err.contains("prompts.json: record [0].conversations[0].from: unknown variant `robot`"), "{err}");
    assert!(err.contains("line 2"), "{err}");
    assert!(!out.exists(), "nothing written");
    // Two records with one id would mix in every file keyed by id: the second is named.
    let turn = "\"conversations\": [{\"from\": \"human\", \"value\": \"<image>\\nhi\"}]";
    let twice = format!(
        "[{{\"id\": \"x\", \"image\": \"img/a.png\", {turn}}},\n {{\"id\": \"x\", \"image\": \"img/a.png\", {turn}}}]"
    );
    std::fs::write(&prompts, twice).unwrap();
    let r = factrl(&base);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        !r.status.success() && err.contains("record [1]") && err.contains("already used by record [0]"),
        "{err}"
    );
    assert!(err.contains("line 2"), "{err}");
    assert!(!out.exists(), "nothing written");
}

/// A small world, and the first prompts of each task with their scenes.
fn world_dir(tmp: &Path) -> PathBuf {
    let dir = tmp.join("world");
    let cfg = WorldConfig { images: 400, pope_images: 5, mmhal_per_type: 1, ..Default::default() };
    world::generate(&cfg, &dir, false).unwrap();
    dir
}

/// `factrl annotate auto` without noise.
fn auto_cli(world: &Path, candidates: &Path, output: &Path) -> std::process::Output {
    factrl(&["annotate", "auto", "--world", s(world), "--candidates", s(candidates), "--output", s(output)])
}

/// A class that is not in the scene of `image`.
fn absent(world: &Path, image: &str) -> String {
    let scenes = world::load_scenes(world).unwrap();
    let scene = &scenes.iter().find(|r| r.image == image).unwrap().scene;
    Class::all().find(|c| !scene.has(*c)).unwrap().name()
}

#[test]
fn auto_prefers_honesty_then_helpfulness_and_drops_ties() {
    let tmp = tempfile::tempdir().unwrap();
    let world = world_dir(tmp.path());
    let prompts: Vec<Candidate> =
        serde_json::from_slice(&std::fs::read(world.join("prefs_prompts.json")).unwrap()).unwrap();
    let find = |task: &str| prompts.iter().find(|p| p.task.map(|t| t.name()) == Some(task)).unwrap().clone();
    // A description: the reference, the reference plus an absent object, its first sentence only.
    let mut d = find("description");
    let reference = d.conversations[1].value.clone();
    let lie = format!("{reference} A small {} is in the center.", absent(&world, &d.image));
    let first = format!("{}.", reference.split(". ").next().unwrap());
    d.responses = vec![reference.clone(), lie.clone(), first.clone()];
    // An existence question: the reference, its opposite, the reference again (a tie).
    let mut e = find("existence");
    let right = e.conversations[1].value.clone();
    let wrong = if right.starts_with("Yes") { "No." } else { "Yes." }.to_string();
    e.responses = vec![right.clone(), wrong, right];
    for c in [&mut d, &mut e] {
        c.image = format!("../world/{}", c.image);
    }
    let cand_dir = tmp.path().join("cands");
    std::fs::create_dir_all(&cand_dir).unwrap();
    let candidates = cand_dir.join("candidates.json");
    std::fs::write(&candidates, serde_json::to_string(&[&d, &e]).unwrap()).unwrap();

    let output = tmp.path().join("prefs/prefs.json");
    let r = auto_cli(&world, &candidates, &output);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let stdout = String::from_utf8(r.stdout).unwrap();
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["pairs"], 5);
    assert_eq!(summary["ties_dropped"], 1);
    let prefs: Vec<Preference> = serde_json::from_slice(&std::fs::read(&output).unwrap()).unwrap();
    let got: Vec<_> = prefs
        .iter()
        .map(|p| (p.id.as_str(), p.pair, p.preference, p.hallucination, p.hallucinated_1, p.hallucinated_2))
        .collect();
    assert_eq!(
        got,
        [
            // Honesty first: the reference beats the lie (Q1) and the short answer beats the lie
            // too, though the lie names more objects; the reference beats the short one on Q2.
            (d.id.as_str(), Some([0, 1]), 1, true, false, true),
            (d.id.as_str(), Some([0, 2]), 1, false, false, false),
            (d.id.as_str(), Some([1, 2]), 2, true, true, false),
            (e.id.as_str(), Some([0, 1]), 1, true, false, true),
            (e.id.as_str(), Some([1, 2]), 2, true, true, false),
        ]
    );
    assert_eq!(prefs[0].flags_2, [Flag::Object]);
    assert_eq!(prefs[0].output_2.value, lie);
    assert_eq!(prefs[1].output_2.value, first);
    assert_eq!(prefs[0].annotator, "simulated");
    assert_eq!(prefs[0].conversations, d.conversations);
    assert_eq!(prefs[3].task, e.task);
    // Images are relative to the prefs file and name the world's image.
    assert_eq!(prefs[0].image, format!("../world/{}", find("description").image));
    assert!(output.parent().unwrap().join(&prefs[0].image).exists());

    // The public format's fields are all there, with LLaVA's names and types.
    let raw: Vec<Value> = serde_json::from_slice(&std::fs::read(&output).unwrap()).unwrap();
    for key in ["id", "image", "conversations", "preference", "hallucination"] {
        assert!(raw[0].get(key).is_some(), "{key}");
    }
    assert_eq!(raw[0]["output_1"], json!({"from": "llava", "value": reference}));

    // Noise flips a seeded share of the pairs, and nothing else.
    let noisy = tmp.path().join("prefs/noisy.json");
    let flip = |seed: u64| {
        let s = auto::annotate(
            &world,
            &candidates,
            &noisy,
            &AutoOptions { noise: 0.4, seed, ..Default::default() },
        )
        .unwrap();
        let p: Vec<Preference> = serde_json::from_slice(&std::fs::read(&noisy).unwrap()).unwrap();
        (s, p)
    };
    let (summary, flipped) = flip(1);
    assert_eq!(summary.flipped, 2);
    let changed: Vec<usize> = (0..5).filter(|&k| flipped[k].preference != prefs[k].preference).collect();
    assert_eq!(changed.len(), 2);
    for k in 0..5 {
        assert_eq!(Preference { preference: prefs[k].preference, ..flipped[k].clone() }, prefs[k]);
    }
    assert_eq!(flip(1).1, flipped);

    // Injection appends built pairs for the description prompt only, leaving the judged ones as
    // they were: the reference against a copy with one claim made false, the reference preferred.
    let injected = tmp.path().join("prefs/injected.json");
    let r = factrl(&[
        "annotate",
        "auto",
        "--world",
        s(&world),
        "--candidates",
        s(&candidates),
        "--output",
        s(&injected),
        "--inject",
        "3",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let summary: Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(summary["injected"], 3);
    let built: Vec<Preference> = serde_json::from_slice(&std::fs::read(&injected).unwrap()).unwrap();
    assert_eq!(built[..5], prefs[..]);
    assert_eq!(built.len(), 8);
    for p in &built[5..] {
        assert!(p.injected && p.pair.is_none() && p.hallucination, "{p:?}");
        assert_eq!(p.id, d.id);
        let (good, bad, bad_flags) = match p.preference {
            1 => (&p.output_1, &p.output_2, &p.flags_2),
            _ => (&p.output_2, &p.output_1, &p.flags_1),
        };
        assert_eq!(good.value, reference);
        assert_ne!(bad.value, reference);
        assert!(!bad_flags.is_empty());
    }
    let raw: Vec<Value> = serde_json::from_slice(&std::fs::read(&injected).unwrap()).unwrap();
    assert!(
        raw[0].get("injected").is_none() && raw[5]["injected"] == json!(true) && raw[5].get("pair").is_none()
    );
}

#[test]
fn copy_pairs_prefer_the_answer_the_facts_name() {
    let tmp = tempfile::tempdir().unwrap();
    let world = world_dir(tmp.path());
    let mut prompts: Vec<Candidate> =
        serde_json::from_slice(&std::fs::read(world.join("prefs_prompts.json")).unwrap()).unwrap();
    prompts.truncate(80);
    // Two identical responses: a tie, so every written pair is a copy pair.
    for p in &mut prompts {
        p.responses = vec![p.conversations[1].value.clone(); 2];
    }
    let candidates = world.join("candidates.json");
    let output = tmp.path().join("prefs/copy.json");
    let run = |prompts: &[Candidate]| {
        std::fs::write(&candidates, serde_json::to_string(prompts).unwrap()).unwrap();
        let args = ["annotate", "auto", "--world", s(&world), "--candidates", s(&candidates)];
        factrl(&[&args[..], &["--output", s(&output), "--copy", "2"]].concat())
    };
    let r = run(&prompts);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let summary: Value = serde_json::from_slice(&r.stdout).unwrap();
    let prefs: Vec<Preference> = serde_json::from_slice(&std::fs::read(&output).unwrap()).unwrap();
    assert_eq!(
        (summary["copies"].as_u64(), summary["pairs"].as_u64()),
        (Some(prefs.len() as u64), Some(prefs.len() as u64))
    );
    let by_id = |id: &str| prompts.iter().find(|p| p.id == id).unwrap();
    let references = |task| -> Vec<&str> {
        prompts.iter().filter(|p| p.task == task).map(|p| p.conversations[1].value.as_str()).collect()
    };
    for p in &prefs {
        let c = by_id(&p.id);
        assert_ne!(c.task, Some(Task::Description), "{p:?}");
        assert!(p.copy && !p.injected && !p.hallucination && p.pair.is_none(), "{p:?}");
        assert!(p.flags_1.is_empty() && p.flags_2.is_empty());
        let (said, other) = match p.preference {
            1 => (&p.output_1.value, &p.output_2.value),
            _ => (&p.output_2.value, &p.output_1.value),
        };
        // Two different answers to questions of the prompt's kind, of one form; the facts name
        // the preferred one, whatever the image shows.
        assert_ne!(said, other);
        let pool = references(c.task);
        assert!(pool.contains(&said.as_str()) && pool.contains(&other.as_str()), "{p:?}");
        // One form: a one-word answer (yes / no, a letter), or the same first two words and length.
        let words = |a: &str| {
            let w: Vec<String> = a.split_whitespace().map(str::to_string).collect();
            (if w.len() > 1 { w[..2].to_vec() } else { Vec::new() }, w.len())
        };
        assert_eq!(words(said), words(other));
        assert_eq!(p.captions.as_deref(), Some(&[format!("The answer is: {said}")][..]));
    }
    // Each existence question (yes and no both among the answers) gets its two.
    for e in prompts.iter().filter(|p| p.task == Some(Task::Existence)) {
        assert_eq!(prefs.iter().filter(|p| p.id == e.id).count(), 2, "{}", e.id);
    }
    assert!(prefs.iter().any(|p| p.preference == 1) && prefs.iter().any(|p| p.preference == 2));
    let written = std::fs::read(&output).unwrap();
    assert!(run(&prompts).status.success() && std::fs::read(&output).unwrap() == written, "seeded");

    // A short question without its answer fact cannot be rewritten: the record is named.
    let k = prompts.iter().position(|p| p.task == Some(Task::Existence)).unwrap();
    prompts[k].captions = None;
    let r = run(&prompts);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert!(
        err.contains(&format!("record [{k}] (id {:?})", prompts[k].id)) && err.contains("answer fact"),
        "{err}"
    );
}

#[test]
fn auto_names_a_candidate_whose_image_is_not_in_the_world() {
    let tmp = tempfile::tempdir().unwrap();
    let world = world_dir(tmp.path());
    let image = tmp.path().join("elsewhere.png");
    std::fs::copy(world.join("images/000000.png"), &image).unwrap();
    let c = json!([{"id": "q", "image": "elsewhere.png", "responses": ["Yes.", "No."],
                    "conversations": [{"from": "human", "value": "<image>\nIs there a red circle in the image?"}]}]);
    let candidates = tmp.path().join("c.json");
    std::fs::write(&candidates, c.to_string()).unwrap();
    let out = tmp.path().join("p.json");
    let r = auto_cli(&world, &candidates, &out);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert!(
        err.contains(
            "c.json: record [0] (id \"q\"): field `image`: elsewhere.png is not an image of the world"
        ),
        "{err}"
    );
    assert!(!out.exists());
}
