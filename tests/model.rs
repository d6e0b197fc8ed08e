//! Invariance and training tests of the LLaVA model on a tiny random configuration.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Tensor};
use factrl::backend::{inference_device, training_device};
use factrl::model::checkpoint::{load_llava, load_scalar_head, save_llava, save_scalar_head};
use factrl::model::generate::{SamplingConfig, generate};
use factrl::model::llava::ScalarHead;
use factrl::model::lora::{LoraConfig, LoraTarget, apply_lora, merge_lora};
use factrl::model::store::SaveDtype;
use factrl::model::{ImageInput, Llava, LlavaConfig, ModelError, PaddingSide, TextBatch};

const VOCAB: usize = 50;

fn config() -> LlavaConfig {
    let mut config = LlavaConfig::tiny(VOCAB);
    // Smaller images keep the tests fast: 16 px in 8 px patches = 4 features per image.
    config.vision.image_size = 16;
    config.vision.num_hidden_layers = 3;
    config.vision_feature_layer = -2;
    config.eos_token_id = Some(2);
    config
}

fn model(device: &Device) -> Llava {
    device.seed(7);
    Llava::init(&config(), device).unwrap()
}

fn pixels(n: usize, device: &Device) -> Tensor<4> {
    Tensor::random([n, 3, 16, 16], Distribution::Normal(0.0, 1.0), device)
}

/// Two prompts with one image each: `[bos, image x 4, text...]`.
fn sequences() -> Vec<Vec<u32>> {
    let img = (VOCAB - 1) as u32;
    vec![vec![1, img, img, img, img, 5, 6, 7, 8, 9], vec![1, img, img, img, img, 10, 11]]
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}

fn assert_close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol, "index {i}: {x} vs {y}");
    }
}

/// Names of trainable parameters that have no (or an all-zero) gradient.
struct GradCheck<'a> {
    grads: &'a GradientsParams,
    stack: Vec<String>,
    checked: usize,
    missing: Vec<String>,
}

impl ModuleVisitor for GradCheck<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.stack.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if !param.is_require_grad() {
            return;
        }
        self.checked += 1;
        let nonzero = self.grads.get::<D>(param.id).is_some_and(|g| g.abs().sum().into_scalar::<f32>() > 0.0);
        if !nonzero {
            self.missing.push(self.stack.join("."));
        }
    }
}

fn params_without_grad<M: Module>(module: &M, grads: &GradientsParams) -> (usize, Vec<String>) {
    let mut check = GradCheck { grads, stack: Vec::new(), checked: 0, missing: Vec::new() };
    module.visit(&mut check);
    (check.checked, check.missing)
}

#[test]
fn every_trainable_parameter_gets_a_gradient() {
    let device = training_device();
    let model = model(&device);
    let head = ScalarHead::init(128, false, &device);
    let batch = TextBatch::pad(&sequences(), 0, PaddingSide::Right);
    let hidden = model.hidden_states(&batch, ImageInput::Pixels(pixels(2, &device))).unwrap();
    let lm = model.logits(hidden.clone()).sum();
    let score = head.forward(hidden, &batch.last_real()).sum();
    let mut grads = (lm + score).backward();
    let grads_model = GradientsParams::from_module(&mut grads, &model);
    let (checked, missing) = params_without_grad(&model, &grads_model);
    assert!(checked > 50, "only {checked} parameters checked");
    assert!(missing.is_empty(), "no gradient for {missing:?}");
    let grads_head = GradientsParams::from_module(&mut grads, &head);
    assert!(params_without_grad(&head, &grads_head).1.is_empty());
}

#[test]
fn padding_side_does_not_change_real_logits() {
    let device = inference_device();
    let model = model(&device);
    let images = pixels(2, &device);
    let seqs = sequences();
    let right = TextBatch::pad(&seqs, 0, PaddingSide::Right);
    let left = TextBatch::pad(&seqs, 0, PaddingSide::Left);
    let lr = to_vec(model.forward(&right, ImageInput::Pixels(images.clone())).unwrap());
    let ll = to_vec(model.forward(&left, ImageInput::Pixels(images.clone())).unwrap());
    let alone = TextBatch::pad(&seqs[1..], 0, PaddingSide::Right);
    let la = to_vec(model.forward(&alone, ImageInput::Pixels(images.narrow(0, 1, 1))).unwrap());
    let (t, pad) = (right.len, right.len - seqs[1].len());
    // Row 1 is shorter: real tokens at columns 0..7 on the right, pad..t on the left.
    let row = |v: &[f32], from: usize| v[(t + from) * VOCAB..(t + from + seqs[1].len()) * VOCAB].to_vec();
    assert_close(&row(&lr, 0), &row(&ll, pad), 1e-4);
    assert_close(&row(&lr, 0), &la, 1e-4);
}

#[test]
fn precomputed_features_equal_pixels() {
    let device = inference_device();
    let model = model(&device);
    let images = pixels(2, &device);
    let batch = TextBatch::pad(&sequences(), 0, PaddingSide::Right);
    let a = to_vec(model.forward(&batch, ImageInput::Pixels(images.clone())).unwrap());
    let features = model.image_features(images);
    assert_eq!(features.dims(), [2, 4, 64]);
    let b = to_vec(model.forward(&batch, ImageInput::Features(features)).unwrap());
    assert_close(&a, &b, 1e-6);
}

#[test]
fn image_token_mismatch_and_unknown_ids_are_errors() {
    let device = inference_device();
    let model = model(&device);
    let mut seqs = sequences();
    seqs[0].remove(1); // 3 image tokens for a 4-feature image
    let batch = TextBatch::pad(&seqs, 0, PaddingSide::Right);
    let err = model.forward(&batch, ImageInput::Pixels(pixels(2, &device))).unwrap_err();
    assert!(matches!(err, ModelError::Input(_)), "{err}");
    assert!(err.to_string().contains("image tokens"), "{err}");
    let batch = TextBatch::pad(&[vec![1, VOCAB as u32 + 3]], 0, PaddingSide::Right);
    let err = model.forward(&batch, ImageInput::None).unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
}

#[test]
fn cached_generation_equals_full_recomputation() {
    let device = inference_device();
    let model = model(&device);
    let images = pixels(2, &device);
    let seqs = sequences();
    let sampling = SamplingConfig { max_new_tokens: 6, temperature: 1.0, seed: 3, ..Default::default() };
    let gens = generate(&model, &seqs, ImageInput::Pixels(images.clone()), &sampling).unwrap();
    for (row, out) in gens.iter().enumerate() {
        // Regression: a sampled image placeholder broke the next decoding step.
        assert!(!out.token_ids.contains(&(VOCAB as u32 - 1)), "generated the image token");
        let full: Vec<u32> = seqs[row].iter().chain(&out.token_ids).copied().collect();
        let batch = TextBatch::pad(std::slice::from_ref(&full), 0, PaddingSide::Right);
        let logp = to_vec(
            model.token_logprobs(&batch, ImageInput::Pixels(images.clone().narrow(0, row, 1))).unwrap(),
        );
        let recomputed = &logp[seqs[row].len() - 1..];
        assert_close(&out.logprobs, recomputed, 1e-4);
    }
    // Same seed, same tokens.
    let again = generate(&model, &seqs, ImageInput::Pixels(images), &sampling).unwrap();
    assert_eq!(gens, again);
}

#[test]
fn lora_merged_equals_unmerged_after_a_step() {
    let device = training_device();
    let model = model(&device);
    let lora =
        LoraConfig { rank: 4, alpha: 8.0, dropout: 0.0, targets: vec![LoraTarget::QProj, LoraTarget::VProj] };
    let model = apply_lora(model, &lora).unwrap();
    let batch = TextBatch::pad(&sequences(), 0, PaddingSide::Right);
    let images = pixels(2, &device);
    let before = to_vec(model.valid().forward(&batch, ImageInput::Pixels(images.clone())).unwrap());
    let loss = model.token_logprobs(&batch, ImageInput::Pixels(images.clone())).unwrap().sum().neg();
    let grads = GradientsParams::from_module(&mut loss.backward(), &model);
    // Only the adapters train: 2 targets x 4 layers x (A, B).
    assert_eq!(grads.len(), 16);
    let mut optim = AdamWConfig::new().init();
    let model = optim.step(1e-2, model, grads);
    let merged = merge_lora(&model);
    let a = to_vec(model.valid().forward(&batch, ImageInput::Pixels(images.clone())).unwrap());
    let b = to_vec(merged.valid().forward(&batch, ImageInput::Pixels(images.clone())).unwrap());
    assert_close(&a, &b, 1e-4);
    assert!(lora_changed(&model), "the step left B at zero");
    // Saving folds the adapters in: the reloaded plain model computes what the adapted one does.
    let dir = tempfile::tempdir().unwrap();
    save_llava(&model, dir.path(), SaveDtype::F32, usize::MAX).unwrap();
    let reloaded = load_llava(dir.path(), &inference_device()).unwrap();
    let images_cpu = Tensor::from_data(images.to_data(), &inference_device());
    let c = to_vec(reloaded.forward(&batch, ImageInput::Pixels(images_cpu)).unwrap());
    assert_close(&a, &c, 1e-4);
    assert!(a.iter().zip(&before).any(|(x, y)| (x - y).abs() > 1e-4), "the adapters changed nothing");
    assert!(merge_lora(&merged).language_model.layers[0].self_attn.q_proj.weight.adapter().is_none());
}

#[test]
fn lora_dropout_acts_only_while_training_and_every_adapter_still_learns() {
    let device = training_device();
    let lora = |dropout| LoraConfig { rank: 4, alpha: 8.0, dropout, targets: LoraTarget::ALL.to_vec() };
    let bad = apply_lora(model(&device), &lora(1.0)).err().map(|e| e.to_string());
    assert!(bad.is_some_and(|e| e.contains("dropout")), "dropout 1 was accepted");
    let model = apply_lora(model(&device), &lora(0.5)).unwrap();
    let batch = TextBatch::pad(&sequences(), 0, PaddingSide::Right);
    let images = pixels(2, &device);
    let step = |model: Llava| {
        let loss = model.token_logprobs(&batch, ImageInput::Pixels(images.clone())).unwrap().sum().neg();
        let grads = GradientsParams::from_module(&mut loss.backward(), &model);
        // 7 targets x 4 layers x (A, B), each with a gradient although half its inputs are dropped.
        assert_eq!(grads.len(), 56);
        AdamWConfig::new().init().step(1e-2, model, grads)
    };
    let model = step(step(model));
    let train = |m: &Llava| to_vec(m.token_logprobs(&batch, ImageInput::Pixels(images.clone())).unwrap());
    let (first, second) = (train(&model), train(&model));
    assert!(first.iter().zip(&second).any(|(x, y)| (x - y).abs() > 1e-4), "no dropout while training");
    // Without autodiff the adapters run undropped: the same as the merged weights.
    let valid = to_vec(model.valid().forward(&batch, ImageInput::Pixels(images.clone())).unwrap());
    let merged = to_vec(merge_lora(&model).valid().forward(&batch, ImageInput::Pixels(images)).unwrap());
    assert_close(&valid, &merged, 1e-4);
}

fn lora_changed(model: &Llava) -> bool {
    let adapter = model.language_model.layers[0].self_attn.q_proj.weight.adapter();
    adapter.is_some_and(|a| a.b.val().abs().sum().into_scalar::<f32>() > 0.0)
}

#[test]
fn checkpoint_round_trip_in_shards_and_half_precision() {
    let device = inference_device();
    let model = model(&device);
    let batch = TextBatch::pad(&sequences(), 0, PaddingSide::Right);
    let images = pixels(2, &device);
    let expected = to_vec(model.forward(&batch, ImageInput::Pixels(images.clone())).unwrap());
    let dir = tempfile::tempdir().unwrap();
    save_llava(&model, dir.path(), SaveDtype::F32, 200_000).unwrap();
    assert!(dir.path().join("model.safetensors.index.json").exists());
    let loaded = load_llava(dir.path(), &device).unwrap();
    assert_eq!(loaded.config, model.config);
    let got = to_vec(loaded.forward(&batch, ImageInput::Pixels(images.clone())).unwrap());
    assert_close(&expected, &got, 1e-6);
    // Saving over the sharded save leaves one file and no stale shards or index.
    let half = dir;
    save_llava(&model, half.path(), SaveDtype::Bf16, usize::MAX).unwrap();
    let files: Vec<_> = std::fs::read_dir(half.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files.len(), 2, "{files:?}");
    let loaded = load_llava(half.path(), &device).unwrap();
    let got = to_vec(loaded.forward(&batch, ImageInput::Pixels(images)).unwrap());
    assert_close(&expected, &got, 0.1);
}

#[test]
fn projector_only_training_leaves_the_rest_without_gradient() {
    let device = training_device();
    let model = model(&device).freeze_all_but_projector();
    let batch = TextBatch::pad(&sequences(), 0, PaddingSide::Right);
    let loss = model.token_logprobs(&batch, ImageInput::Pixels(pixels(2, &device))).unwrap().sum();
    let grads = GradientsParams::from_module(&mut loss.backward(), &model);
    // linear_1 and linear_2, weight and bias each.
    assert_eq!(grads.len(), 4);
    let (checked, missing) = params_without_grad(&model, &grads);
    assert_eq!((checked, missing.len()), (4, 0));
    let frozen_vision = self::model(&device).freeze_vision();
    let loss = frozen_vision.token_logprobs(&batch, ImageInput::Pixels(pixels(2, &device))).unwrap().sum();
    let grads = GradientsParams::from_module(&mut loss.backward(), &frozen_vision);
    let (checked, missing) = params_without_grad(&frozen_vision, &grads);
    assert!(missing.is_empty(), "{missing:?}");
    // Only the trainable parameters, so none of the frozen tower's, have gradients.
    assert_eq!(grads.len(), checked);
}

#[test]
fn scalar_head_round_trip_scores_the_last_real_token() {
    let device = inference_device();
    let model = model(&device);
    let head = ScalarHead::init(128, false, &device);
    let seqs = sequences();
    let batch = TextBatch::pad(&seqs, 0, PaddingSide::Right);
    let images = pixels(2, &device);
    let hidden = model.hidden_states(&batch, ImageInput::Pixels(images.clone())).unwrap();
    let scores = to_vec(head.forward(hidden, &batch.last_real()));
    // The short row alone, unpadded, gives the same score.
    let alone = TextBatch::pad(&seqs[1..], 0, PaddingSide::Right);
    let hidden = model.hidden_states(&alone, ImageInput::Pixels(images.narrow(0, 1, 1))).unwrap();
    assert_close(&scores[1..], &to_vec(head.forward(hidden, &alone.last_real())), 1e-5);
    let dir = tempfile::tempdir().unwrap();
    save_llava(&model, dir.path(), SaveDtype::F32, usize::MAX).unwrap();
    save_scalar_head(&head, dir.path()).unwrap();
    let loaded = load_scalar_head(dir.path(), &device).unwrap();
    assert_eq!(to_vec(loaded.score.weight.val()), to_vec(head.score.weight.val()));
    assert_eq!(loaded.score.weight.dims(), [128, 1]);
}

#[test]
fn response_logprobs_pick_the_response_columns() {
    let device = inference_device();
    let model = model(&device);
    let images = pixels(2, &device);
    let seqs = sequences();
    // Prompts end after the image and one text token; the rest is the response.
    let prompts: Vec<Vec<u32>> = seqs.iter().map(|s| s[..6].to_vec()).collect();
    let responses: Vec<Vec<u32>> = seqs.iter().map(|s| s[6..].to_vec()).collect();
    let got =
        to_vec(model.response_logprobs(&prompts, &responses, ImageInput::Pixels(images.clone())).unwrap());
    let batch = TextBatch::pad(&seqs, 0, PaddingSide::Right);
    let all = to_vec(model.token_logprobs(&batch, ImageInput::Pixels(images)).unwrap());
    let (t, r) = (batch.len - 1, 4);
    assert_eq!(got.len(), 2 * r);
    // Row 0: 4 response tokens at columns 6..10, predicted at 5..9.
    assert_close(&got[..4], &all[5..9], 1e-6);
    // Row 1: 1 response token, then zeros.
    assert_close(&got[4..5], &all[t + 5..t + 6], 1e-6);
    assert_eq!(&got[5..], &[0.0, 0.0, 0.0]);
}
