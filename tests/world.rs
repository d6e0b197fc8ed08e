//! The world's guarantees: ground truth matches the pixels, POPE follows POPE's rules, splits never
//! leak, formats round-trip, the same seed gives the same bytes, and bad input fails cleanly.

use factrl::data::formats::{CaptionType, Conversation, MmhalRecord, PopeQuestion, PpoPrompt, Task, YesNo};
use factrl::io::{read_json, read_jsonl};
use factrl::world::render::inside;
use factrl::world::scene::{Class, Colour, Shape};
use factrl::world::{self, SceneRecord, Split, WorldConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn small(seed: u64) -> WorldConfig {
    WorldConfig { images: 400, seed, pope_images: 30, mmhal_per_type: 2, ..WorldConfig::default() }
}

fn make(cfg: &WorldConfig) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("world");
    world::generate(cfg, &out, false).unwrap();
    (tmp, out)
}

/// Every file under a folder with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn same_seed_gives_identical_bytes_whatever_the_thread_count() {
    let (_a, a) = make(&small(5));
    let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let (_b, b) = one_thread.install(|| make(&small(5)));
    let (sa, sb) = (snapshot(&a), snapshot(&b));
    assert_eq!(sa.keys().collect::<Vec<_>>(), sb.keys().collect::<Vec<_>>());
    for (k, v) in &sa {
        assert!(v == &sb[k], "{} differs between runs", k.display());
    }
    let (_c, c) = make(&small(6));
    assert_ne!(std::fs::read(a.join("scenes.json")).unwrap(), std::fs::read(c.join("scenes.json")).unwrap());
}

#[test]
fn ground_truth_matches_the_pixels() {
    let (_t, dir) = make(&small(1));
    let scenes = world::load_scenes(&dir).unwrap();
    let mut checked = 0;
    for rec in scenes.iter().take(150) {
        let img = image::open(dir.join(&rec.image)).unwrap().to_rgb8();
        let bg = rec.scene.background[0].map(|c| c as f32);
        for o in &rec.scene.objects {
            let [x0, y0, x1, y1] = o.bbox;
            // Fully covered pixels are far from the background; their mean is the object's colour.
            let px = |x: u32, y: u32| img.get_pixel(x, y).0.map(|c| c as f32);
            let dist = |p: [f32; 3], q: [f32; 3]| (0..3).map(|c| (p[c] - q[c]).powi(2)).sum::<f32>().sqrt();
            let cells: Vec<(u32, u32)> = (y0..y1).flat_map(|y| (x0..x1).map(move |x| (x, y))).collect();
            let solid: Vec<[f32; 3]> =
                cells.iter().map(|&(x, y)| px(x, y)).filter(|p| dist(*p, bg) > 120.0).collect();
            assert!(!solid.is_empty(), "{}: no pixels for {:?}", rec.image, o.class());
            let fill: [f32; 3] =
                std::array::from_fn(|c| solid.iter().map(|p| p[c]).sum::<f32>() / solid.len() as f32);
            let colour = Colour::ALL
                .into_iter()
                .min_by(|a, b| {
                    dist(a.rgb().map(|c| c as f32), fill).total_cmp(&dist(b.rgb().map(|c| c as f32), fill))
                })
                .unwrap();
            assert_eq!(colour, o.colour, "{}: colour of the object at {}", rec.image, o.cell.name());
            // Each pixel's coverage, read back from where it lies between background and fill.
            let span: Vec<f32> = (0..3).map(|c| fill[c] - bg[c]).collect();
            let norm: f32 = span.iter().map(|s| s * s).sum();
            let alpha = |x: u32, y: u32| {
                let p = px(x, y);
                ((0..3).map(|c| (p[c] - bg[c]) * span[c]).sum::<f32>() / norm).clamp(0.0, 1.0)
            };
            // Shape: the geometry whose coverage (8x8 samples per pixel) best explains the pixels.
            let err = |s: Shape| -> f32 {
                cells
                    .iter()
                    .map(|&(x, y)| {
                        let mut hit = 0;
                        for k in 0..64 {
                            let u = (x as f32 + ((k % 8) as f32 + 0.5) / 8.0 - o.center[0]) / o.radius;
                            let v = (y as f32 + ((k / 8) as f32 + 0.5) / 8.0 - o.center[1]) / o.radius;
                            hit += inside(s, u, v) as u32;
                        }
                        (hit as f32 / 64.0 - alpha(x, y)).abs()
                    })
                    .sum()
            };
            let best = Shape::ALL.into_iter().min_by(|a, b| err(*a).total_cmp(&err(*b))).unwrap();
            assert_eq!(
                best,
                o.shape,
                "{}: shape at {} (error {:.2} vs {:.2})",
                rec.image,
                o.cell.name(),
                err(o.shape),
                err(best)
            );
            checked += 1;
        }
        // Relations agree with the cells.
        for r in &rec.relations {
            let (a, b) = (&rec.scene.objects[r.subject], &rec.scene.objects[r.object]);
            match r.relation.as_str() {
                "left of" => assert!(a.center[0] < b.center[0]),
                "above" => assert!(a.center[1] < b.center[1]),
                other => panic!("unknown relation {other}"),
            }
        }
    }
    assert!(checked > 300);
}

#[test]
fn splits_are_disjoint_and_files_stay_in_their_split() {
    let (_t, dir) = make(&small(2));
    let scenes = world::load_scenes(&dir).unwrap();
    let split: BTreeMap<&str, Split> = scenes.iter().map(|r| (r.image.as_str(), r.split)).collect();
    assert_eq!(split.len(), 400);
    let check = |file: &str, images: Vec<String>, want: &[Split]| {
        assert!(!images.is_empty(), "{file} is empty");
        for i in images {
            assert!(want.contains(&split[i.as_str()]), "{file}: {i} is in the {:?} split", split[i.as_str()]);
        }
    };
    let conv = |f: &str| {
        read_json::<Vec<Conversation>>(&dir.join(f)).unwrap().into_iter().map(|c| c.image).collect()
    };
    check("pretrain.json", conv("pretrain.json"), &[Split::Train]);
    check("sft.json", conv("sft.json"), &[Split::Train]);
    check("sft_val.json", conv("sft_val.json"), &[Split::Val]);
    check("pretrain_val.json", conv("pretrain_val.json"), &[Split::Val]);
    check("prefs_prompts.json", conv("prefs_prompts.json"), &[Split::Pref]);
    check("eval.json", conv("eval.json"), &[Split::Eval]);
    let ppo: Vec<PpoPrompt> = read_json(&dir.join("ppo_prompts.json")).unwrap();
    check("ppo_prompts.json", ppo.iter().map(|p| p.image.clone()).collect(), &[Split::Ppo]);
    for s in ["random", "popular", "adversarial"] {
        let q: Vec<PopeQuestion> = read_jsonl(&dir.join(format!("pope_{s}.jsonl"))).unwrap();
        check("pope", q.into_iter().map(|q| q.image).collect(), &[Split::Eval]);
    }
    let mm: Vec<MmhalRecord> = read_json(&dir.join("mmhal.json")).unwrap();
    check("mmhal.json", mm.into_iter().map(|m| m.image_src).collect(), &[Split::Eval]);
}

/// Class of a POPE question text.
fn asked(text: &str) -> Class {
    factrl::world::language::pope_class(text).unwrap_or_else(|| panic!("not a POPE question: {text}"))
}

#[test]
fn pope_follows_popes_rules() {
    let (_t, dir) = make(&WorldConfig { images: 1200, pope_images: 60, ..small(3) });
    let scenes: BTreeMap<String, SceneRecord> =
        world::load_scenes(&dir).unwrap().into_iter().map(|r| (r.image.clone(), r)).collect();
    let files: Vec<Vec<PopeQuestion>> = ["random", "popular", "adversarial"]
        .iter()
        .map(|s| read_jsonl(&dir.join(format!("pope_{s}.jsonl"))).unwrap())
        .collect();
    for qs in &files {
        assert_eq!(qs.len(), 60 * 6);
        // Ids count from 1; labels alternate yes, no; half are yes.
        for (i, q) in qs.iter().enumerate() {
            assert_eq!(q.question_id, i as u64 + 1);
            assert_eq!(q.label, if i % 2 == 0 { YesNo::Yes } else { YesNo::No });
        }
        for chunk in qs.chunks(6) {
            let scene = &scenes[&chunk[0].image].scene;
            assert!(chunk.iter().all(|q| q.image == chunk[0].image));
            let gt = scene.classes();
            // Positives: the first three objects in annotation order.
            let pos: Vec<Class> = chunk.iter().step_by(2).map(|q| asked(&q.text)).collect();
            assert_eq!(pos, gt[..3].to_vec());
            // Negatives: absent and distinct.
            let neg: BTreeSet<Class> = chunk.iter().skip(1).step_by(2).map(|q| asked(&q.text)).collect();
            assert_eq!(neg.len(), 3);
            assert!(neg.iter().all(|c| !scene.has(*c)));
        }
    }
    // The same images in every setting.
    let images = |qs: &Vec<PopeQuestion>| qs.iter().map(|q| q.image.clone()).collect::<Vec<_>>();
    assert_eq!(images(&files[0]), images(&files[1]));
    assert_eq!(images(&files[0]), images(&files[2]));

    // Popular: each image's negatives are the three most frequent absent objects of the sample.
    let sample: Vec<&SceneRecord> = files[1].chunks(6).map(|c| &scenes[&c[0].image]).collect();
    let mut freq: BTreeMap<Class, usize> = BTreeMap::new();
    for r in &sample {
        for c in r.scene.classes() {
            *freq.entry(c).or_default() += 1;
        }
    }
    for (chunk, r) in files[1].chunks(6).zip(&sample) {
        let neg: Vec<usize> = chunk
            .iter()
            .skip(1)
            .step_by(2)
            .map(|q| freq.get(&asked(&q.text)).copied().unwrap_or(0))
            .collect();
        let best_absent = freq.iter().filter(|(c, _)| !r.scene.has(**c)).map(|(_, n)| *n).max().unwrap();
        assert_eq!(neg[0], best_absent, "first popular negative is the most frequent absent object");
        assert!(neg.windows(2).all(|w| w[0] >= w[1]), "popular negatives in frequency order: {neg:?}");
    }
    // Adversarial: each negative co-occurs with its positive at least as often as any other absent object.
    let mut cooc: BTreeMap<(Class, Class), usize> = BTreeMap::new();
    for r in &sample {
        let cs = r.scene.classes();
        for a in &cs {
            for b in cs.iter().filter(|b| *b != a) {
                *cooc.entry((*a, *b)).or_default() += 1;
            }
        }
    }
    for (chunk, r) in files[2].chunks(6).zip(&sample) {
        let (pos, neg) = (asked(&chunk[0].text), asked(&chunk[1].text));
        let best = Class::all()
            .filter(|c| !r.scene.has(*c))
            .map(|c| cooc.get(&(pos, c)).copied().unwrap_or(0))
            .max()
            .unwrap();
        if best > 0 {
            assert_eq!(cooc.get(&(pos, neg)).copied().unwrap_or(0), best, "{}", chunk[1].text);
        }
    }
    // Adversarial negatives are mostly the usual partners, random ones rarely.
    let partner_share = |qs: &Vec<PopeQuestion>| {
        let negs: Vec<&PopeQuestion> = qs.iter().filter(|q| q.label == YesNo::No).collect();
        negs.iter()
            .filter(|q| {
                scenes[&q.image].scene.absent_kind(asked(&q.text)) == Some(world::scene::AbsentKind::Partner)
            })
            .count() as f64
            / negs.len() as f64
    };
    assert!(partner_share(&files[2]) > 2.0 * partner_share(&files[0]));
}

#[test]
fn formats_round_trip_and_every_text_is_in_the_vocabulary() {
    let (_t, dir) = make(&small(4));
    let tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let unknown = std::cell::RefCell::new(BTreeSet::new());
    let check_text = |t: &str| {
        let enc = tok.encode(t, false).unwrap();
        let (_, offsets) = (enc.get_ids(), enc.get_offsets());
        for (id, (a, b)) in enc.get_ids().iter().zip(offsets) {
            if *id == 0 {
                unknown.borrow_mut().insert(t[*a..*b].to_string());
            }
        }
    };
    // Each JSON file re-serialises to the same bytes through the typed records.
    fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(p: &Path) -> T {
        let v: T = read_json(p).unwrap();
        let mut again = serde_json::to_vec_pretty(&v).unwrap();
        again.push(b'\n');
        assert!(again == std::fs::read(p).unwrap(), "{} does not round-trip", p.display());
        v
    }
    for f in
        ["pretrain.json", "pretrain_val.json", "sft.json", "sft_val.json", "prefs_prompts.json", "eval.json"]
    {
        let recs: Vec<Conversation> = round_trip(&dir.join(f));
        for r in &recs {
            assert!(r.conversations[0].value.starts_with("<image>\n"), "{f}: {}", r.id);
            r.conversations.iter().for_each(|t| check_text(&t.value));
            r.captions.iter().flatten().for_each(|t| check_text(t));
        }
    }
    let ppo: Vec<PpoPrompt> = round_trip(&dir.join("ppo_prompts.json"));
    // The PPO mix (world.json's `ppo_prompts`): two prompts per image, descriptions and existence
    // questions only, the existence questions' truth balanced (within sampling noise).
    let images: BTreeSet<&str> = ppo.iter().map(|p| p.image.as_str()).collect();
    assert_eq!(ppo.len(), 2 * images.len());
    let count = |t: Task| ppo.iter().filter(|p| p.task == Some(t)).count();
    assert_eq!(count(Task::Description) + count(Task::Existence), ppo.len());
    let no = ppo.iter().filter(|p| p.caption_type == CaptionType::No).count() as f64;
    let share = no / count(Task::Existence) as f64;
    assert!((0.35..0.65).contains(&share), "existence truth \"No\" share {share}");
    ppo.iter()
        .flat_map(|p| p.conversations.iter().map(|t| t.value.clone()).chain(p.captions.clone()))
        .for_each(|t| check_text(&t));
    let mm: Vec<MmhalRecord> = round_trip(&dir.join("mmhal.json"));
    mm.iter().for_each(|m| {
        check_text(&m.question);
        check_text(&m.gt_answer)
    });
    let caps: BTreeMap<String, Vec<String>> = round_trip(&dir.join("image_to_caption.json"));
    assert_eq!(caps.len(), 400);
    for c in caps.values() {
        assert_eq!(c.len(), 6);
        assert_eq!(c.iter().collect::<BTreeSet<_>>().len(), 6, "captions differ: {c:?}");
        c.iter().for_each(|t| check_text(t));
    }
    // The reward model's facts of a preference or PPO prompt: a description's is the true
    // description (the image's dense caption), a short question's its right answer alone.
    let prefs: Vec<Conversation> = round_trip(&dir.join("prefs_prompts.json"));
    let prompts = prefs.iter().map(|p| (&p.image, p.task, &p.conversations, p.captions.clone().unwrap()));
    let prompts = prompts.chain(ppo.iter().map(|p| (&p.image, p.task, &p.conversations, p.captions.clone())));
    for (image, task, conv, facts) in prompts {
        let want = match task {
            Some(Task::Description) => caps[image].last().unwrap().clone(),
            _ => format!("The answer is: {}", conv[1].value),
        };
        assert_eq!(facts, [want]);
    }
    let _: Vec<SceneRecord> = round_trip(&dir.join("scenes.json"));
    let _: world::WorldInfo = round_trip(&dir.join("world.json"));
    for s in ["random", "popular", "adversarial"] {
        let p = dir.join(format!("pope_{s}.jsonl"));
        let qs: Vec<PopeQuestion> = read_jsonl(&p).unwrap();
        let again: String = qs.iter().map(|q| serde_json::to_string(q).unwrap() + "\n").collect();
        assert_eq!(again, std::fs::read_to_string(&p).unwrap());
        qs.iter().for_each(|q| check_text(&q.text));
    }
    assert!(unknown.borrow().is_empty(), "words missing from the tokenizer: {:?}", unknown.borrow());
}

#[test]
fn biases_are_as_configured() {
    let (_t, dir) = make(&WorldConfig { images: 2000, ..small(8) });
    let info = world::load_info(&dir).unwrap();
    assert!((info.stats.hallucinated_share - 0.15).abs() < 0.03, "{}", info.stats.hallucinated_share);
    assert!((info.stats.existence_yes_share - 0.6).abs() < 0.05, "{}", info.stats.existence_yes_share);
    // Hard negatives: among "no" existence answers about a colour + shape, about half share the
    // colour or the shape of a present object.
    let scenes: BTreeMap<String, SceneRecord> =
        world::load_scenes(&dir).unwrap().into_iter().map(|r| (r.image.clone(), r)).collect();
    let sft: Vec<Conversation> = read_json(&dir.join("sft.json")).unwrap();
    let kinds: Vec<_> = sft
        .iter()
        .filter(|r| r.task == Some(Task::Existence) && r.conversations[1].value == "No.")
        .filter_map(|r| {
            let q = r.conversations[0].value.trim_start_matches("<image>\n");
            factrl::world::language::pope_class(q).map(|c| scenes[&r.image].scene.absent_kind(c).unwrap())
        })
        .collect();
    use world::scene::AbsentKind::*;
    let hard =
        kinds.iter().filter(|k| matches!(k, SameColour | SameShape)).count() as f64 / kinds.len() as f64;
    assert!(hard > 0.4, "hard negative share {hard}");
    // Hallucinated descriptions name an absent partner of a present object.
    let mut seen = 0;
    for r in sft.iter().filter(|r| r.task == Some(Task::Description)) {
        let scene = &scenes[&r.image].scene;
        if r.conversations[1].value != world::language::describe(scene, None) {
            let kinds: Vec<_> = Class::all()
                .filter(|c| {
                    r.conversations[1].value.contains(&format!(" {} is in", c.name())) && !scene.has(*c)
                })
                .map(|c| scene.absent_kind(c))
                .collect();
            assert_eq!(kinds, vec![Some(Partner)], "{}", r.conversations[1].value);
            seen += 1;
        }
    }
    assert!(seen > 100);
    // MMHal cycles through its eight types on distinct images.
    let mm: Vec<MmhalRecord> = read_json(&dir.join("mmhal.json")).unwrap();
    assert_eq!(mm.len(), 16);
    for (i, m) in mm.iter().enumerate() {
        assert_eq!(m.question_type, world::bench::MMHAL_TYPES[i % 8]);
    }
    assert_eq!(mm.iter().map(|m| &m.image_id).collect::<BTreeSet<_>>().len(), 16);
}

fn factrl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_factrl")).args(args).output().unwrap()
}

#[test]
fn bad_input_fails_with_one_line_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("w");
    let o = out.to_str().unwrap();
    for (args, want) in [
        (vec!["world", "--out", o, "--images", "3"], "too few"),
        (vec!["world", "--out", o, "--size", "8"], "size 8 px"),
        (vec!["world", "--out", o, "--hallucination-rate", "1.5"], "hallucination_rate"),
        (vec!["world", "--out", o, "--max-objects", "12"], "objects per scene"),
        (vec!["world", "--out", o, "--images", "ten"], "invalid value"),
    ] {
        let r = factrl(&args);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} left {o}");
    }
    // A folder that cannot be created (its parent is a file).
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let r = factrl(&["world", "--out", file.join("w").to_str().unwrap(), "--images", "100"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("file"), "{err}");
    // An existing non-empty folder is kept unless --force.
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep"), "x").unwrap();
    let r = factrl(&["world", "--out", o, "--images", "100"]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("--force"));
    assert!(out.join("keep").exists());
    let r = factrl(&["world", "--out", o, "--images", "100", "--force"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(!out.join("keep").exists() && out.join("scenes.json").exists());
    // No temporary folder is left beside it.
    let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn eval_pope_scores_answer_files_in_both_formats() {
    let (tmp, dir) = make(&small(9));
    let q = dir.join("pope_adversarial.jsonl");
    let qs: Vec<PopeQuestion> = read_jsonl(&q).unwrap();
    // Always "Yes, ..." in POPE's format; always "No." by question id.
    let yes: String = qs
        .iter()
        .map(|x| serde_json::json!({"question": x.text, "answer": "Yes, there is."}).to_string() + "\n")
        .collect();
    let no: String = qs
        .iter()
        .map(|x| serde_json::json!({"question_id": x.question_id, "text": "No."}).to_string() + "\n")
        .collect();
    let (ya, na) = (tmp.path().join("yes.jsonl"), tmp.path().join("no.jsonl"));
    std::fs::write(&ya, yes).unwrap();
    std::fs::write(&na, no).unwrap();
    let run = |a: &Path| {
        let r =
            factrl(&["eval", "pope", "--questions", q.to_str().unwrap(), "--answers", a.to_str().unwrap()]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        serde_json::from_slice::<serde_json::Value>(&r.stdout).unwrap()
    };
    let m = run(&ya);
    assert_eq!(
        (m["yes_ratio"].as_f64(), m["accuracy"].as_f64(), m["recall"].as_f64()),
        (Some(1.0), Some(0.5), Some(1.0))
    );
    assert_eq!(m["fp"].as_u64(), Some(qs.len() as u64 / 2));
    let m = run(&na);
    assert_eq!(
        (m["yes_ratio"].as_f64(), m["precision"].as_f64(), m["f1"].as_f64()),
        (Some(0.0), Some(0.0), Some(0.0))
    );
    // A wrong question at some line is named.
    let mut lines: Vec<String> = std::fs::read_to_string(&ya).unwrap().lines().map(String::from).collect();
    lines[4] = serde_json::json!({"question": "Is there a cat?", "answer": "No"}).to_string();
    std::fs::write(&ya, lines.join("\n")).unwrap();
    let r = factrl(&["eval", "pope", "--questions", q.to_str().unwrap(), "--answers", ya.to_str().unwrap()]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("line 5"), "{}", String::from_utf8_lossy(&r.stderr));
    // An empty benchmark is an error naming the file, not accuracy 0.
    let empty = tmp.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let r =
        factrl(&["eval", "pope", "--questions", empty.to_str().unwrap(), "--answers", na.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && err.contains("empty.jsonl") && err.contains("no questions"), "{err}");
}
