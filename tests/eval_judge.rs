//! The ground-truth judge against a generated world: every reference answer the world writes is
//! judged right and free of hallucinations (except the SFT descriptions it spoils on purpose),
//! reference descriptions have CHAIR 0 and recall 1, and flipped short answers are caught.

use factrl::data::formats::{Conversation, MmhalRecord, PpoPrompt, Task, Turn};
use factrl::eval::chair::{CaptionChair, chair, summarize};
use factrl::eval::claims::Hallucinations;
use factrl::eval::judge::{judge, mmhal_score, prefer};
use factrl::eval::question::{Question, parse};
use factrl::io::read_json;
use factrl::world::language::describe;
use factrl::world::scene::Scene;
use factrl::world::{self, WorldConfig};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// What the reference answers of a world add up to.
#[derive(Default)]
struct Tally {
    turns: usize,
    spoiled: BTreeMap<&'static str, usize>,
    flipped: usize,
    chairs: Vec<CaptionChair>,
}

impl Tally {
    /// Judges one question and its reference answer.
    fn turn(&mut self, file: &'static str, scene: &Scene, id: &str, q: &str, a: &str, task: Option<Task>) {
        self.turns += 1;
        // Any prefix of an answer is judged without a panic, with helpfulness in [0, 1].
        for (cut, _) in a.char_indices().step_by(5) {
            assert!((0.0..=1.0).contains(&judge(scene, q, &a[..cut]).helpfulness));
        }
        let question = parse(q);
        assert_ne!(question, Question::Unknown, "{id}: unrecognised question {q:?}");
        let v = judge(scene, q, a);
        let open = matches!(question, Question::Describe | Question::Caption);
        assert_eq!(v.correct, if open { None } else { Some(true) }, "{id}: {q:?} -> {a:?}");
        if task == Some(Task::Description) && a != describe(scene, None) {
            // The world's deliberate hallucination: one absent partner, which the count sentence
            // counts too.
            let one = Hallucinations { object: 1, count: 1, ..Default::default() };
            assert_eq!(v.hallucinations, one, "{id}: {a:?}");
            // The simulated annotator prefers the true description.
            assert_eq!(prefer(&judge(scene, q, &describe(scene, None)), &v), Ordering::Greater);
            *self.spoiled.entry(file).or_default() += 1;
            return;
        }
        assert_eq!(v.hallucinations.total(), 0, "{id}: {q:?} -> {a:?}: {v:?}");
        assert!(mmhal_score(&v) >= 5, "{id}: {q:?} -> {a:?}: {v:?}");
        if open {
            self.chairs.push(chair(scene, a));
        }
        // A flipped short answer is wrong and exactly one hallucination.
        let flip = match a {
            "Yes." => Some("No."),
            "No." => Some("Yes."),
            "A." => Some("B."),
            "B." | "C." | "D." => Some("A."),
            _ => None,
        };
        if let Some(f) = flip {
            let w = judge(scene, q, f);
            assert_eq!((w.correct, w.hallucinations.total()), (Some(false), 1), "{id}: {q:?} -> {f:?}");
            self.flipped += 1;
        }
    }

    /// Judges every (human, gpt) pair of conversations.
    fn conversations(
        &mut self,
        file: &'static str,
        scenes: &HashMap<String, Scene>,
        (id, image): (&str, &str),
        turns: &[Turn],
        task: Option<Task>,
    ) {
        let scene = &scenes[image];
        for pair in turns.chunks(2) {
            if let [q, a] = pair {
                self.turn(file, scene, id, &q.value, &a.value, task);
            }
        }
    }
}

fn read<T: serde::de::DeserializeOwned>(dir: &Path, file: &str) -> T {
    read_json(&dir.join(file)).unwrap()
}

#[test]
fn reference_answers_are_right_and_honest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("world");
    let cfg = WorldConfig { images: 300, pope_images: 20, mmhal_per_type: 2, ..Default::default() };
    let stats = world::generate(&cfg, &dir, false).unwrap();
    let scenes: HashMap<String, Scene> =
        world::load_scenes(&dir).unwrap().into_iter().map(|r| (r.image, r.scene)).collect();

    let mut t = Tally::default();
    for file in ["pretrain.json", "sft.json", "sft_val.json", "prefs_prompts.json", "eval.json"] {
        for r in read::<Vec<Conversation>>(&dir, file) {
            t.conversations(file, &scenes, (&r.id, &r.image), &r.conversations, r.task);
        }
    }
    let file = "ppo_prompts.json";
    for r in read::<Vec<PpoPrompt>>(&dir, file) {
        t.conversations(file, &scenes, (&r.id, &r.image), &r.conversations, r.task);
    }
    let mmhal: Vec<MmhalRecord> = read(&dir, "mmhal.json");
    assert_eq!(mmhal.len(), 16);
    for r in &mmhal {
        let task = (r.question_type == "holistic").then_some(Task::Description);
        t.turn("mmhal.json", &scenes[&r.image_src], &r.image_id, &r.question, &r.gt_answer, task);
    }

    assert!(t.turns > 1000 && t.flipped > 100, "{} turns, {} flipped", t.turns, t.flipped);
    // Exactly the descriptions the world spoiled, and only in SFT data.
    assert!(stats.hallucinated_descriptions > 0);
    assert_eq!(t.spoiled.get("sft.json"), Some(&stats.hallucinated_descriptions));
    assert!(t.spoiled.keys().all(|f| f.starts_with("sft")), "{:?}", t.spoiled);
    let s = summarize(&t.chairs);
    assert!(s.captions > 300 && s.mentions > 1000, "{s:?}");
    assert_eq!((s.hallucinated, s.chair_i, s.chair_s, s.recall), (0, 0.0, 0.0, 1.0));

    // Descriptions of one scene judged against another: CHAIR counts the objects whose class the
    // other scene lacks, recall the other's classes that the description names.
    let records = world::load_scenes(&dir).unwrap();
    for (x, y) in records.iter().zip(records.iter().skip(1)) {
        let (x, y) = (&x.scene, &y.scene);
        let c = chair(y, &describe(x, None));
        let absent = x.objects.iter().filter(|o| !y.has(o.class())).count();
        let shared = y.classes().iter().filter(|k| x.has(**k)).count();
        assert_eq!((c.mentions, c.hallucinated, c.recalled), (x.objects.len(), absent, shared));
    }
}
