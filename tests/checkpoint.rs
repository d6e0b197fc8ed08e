//! Checkpoint layouts and the errors of bad checkpoints.

use factrl::backend::inference_device;
use factrl::model::checkpoint::{load_llava, save_llava};
use factrl::model::store::SaveDtype;
use factrl::model::{Llava, LlavaConfig, ModelError};
use safetensors::SafeTensors;
use safetensors::tensor::TensorView;
use std::path::Path;

/// A stored tensor: key, shape, little-endian f32 bytes.
type Stored = (String, Vec<usize>, Vec<u8>);

/// A saved tiny model: its folder and its tensors.
fn saved() -> (tempfile::TempDir, Vec<Stored>) {
    let device = inference_device();
    let mut config = LlavaConfig::tiny(40);
    config.vision.image_size = 16;
    config.vision_feature_layer = -2; // layer 1 is carried, not computed
    let model = Llava::init(&config, &device).unwrap();
    let dir = tempfile::tempdir().unwrap();
    save_llava(&model, dir.path(), SaveDtype::F32, usize::MAX).unwrap();
    let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let tensors = st.tensors().into_iter().map(|(k, v)| (k, v.shape().to_vec(), v.data().to_vec())).collect();
    (dir, tensors)
}

fn rewrite(dir: &Path, tensors: &[Stored]) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(k, s, b)| (k.clone(), TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
}

fn load_error(dir: &Path) -> ModelError {
    load_llava(dir, &inference_device()).unwrap_err()
}

#[test]
fn saves_the_legacy_layout_and_loads_the_4_52_layout() {
    let (dir, tensors) = saved();
    assert!(tensors.iter().all(|(k, _, _)| {
        [
            "vision_tower.vision_model.",
            "multi_modal_projector.",
            "language_model.model.",
            "language_model.lm_head.",
        ]
        .iter()
        .any(|p| k.starts_with(p))
    }));
    // The unused last vision layer and post_layernorm are written too.
    assert!(tensors.iter().any(|(k, _, _)| k == "vision_tower.vision_model.post_layernorm.weight"));
    assert!(tensors.iter().any(|(k, _, _)| k.starts_with("vision_tower.vision_model.encoder.layers.1.")));
    let modern: Vec<_> = tensors
        .into_iter()
        .map(|(k, s, b)| {
            let k = if let Some(rest) = k.strip_prefix("language_model.model.") {
                format!("model.language_model.{rest}")
            } else if let Some(rest) = k.strip_prefix("language_model.lm_head.") {
                format!("lm_head.{rest}")
            } else {
                format!("model.{k}")
            };
            (k, s, b)
        })
        .collect();
    rewrite(dir.path(), &modern);
    load_llava(dir.path(), &inference_device()).unwrap();
}

#[test]
fn missing_tensor_is_named() {
    let (dir, mut tensors) = saved();
    tensors.retain(|(k, _, _)| k != "language_model.model.norm.weight");
    rewrite(dir.path(), &tensors);
    let err = load_error(dir.path()).to_string();
    assert!(err.contains("language_model.norm.weight") && err.contains("missing"), "{err}");
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
}

#[test]
fn wrong_shape_is_named_with_its_file() {
    let (dir, mut tensors) = saved();
    let entry = tensors.iter_mut().find(|(k, _, _)| k == "multi_modal_projector.linear_1.bias").unwrap();
    entry.1 = vec![entry.1[0] / 2, 2];
    rewrite(dir.path(), &tensors);
    let err = load_error(dir.path()).to_string();
    assert!(err.contains("multi_modal_projector.linear_1.bias") && err.contains("shape"), "{err}");
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn a_weight_that_is_not_a_number_is_named() {
    for bad in [f32::NAN, f32::INFINITY] {
        let (dir, mut tensors) = saved();
        let entry = tensors.iter_mut().find(|(k, _, _)| k == "multi_modal_projector.linear_1.bias").unwrap();
        entry.2[8..12].copy_from_slice(&bad.to_le_bytes());
        rewrite(dir.path(), &tensors);
        let err = load_error(dir.path()).to_string();
        assert!(err.contains("multi_modal_projector.linear_1.bias") && err.contains("not finite"), "{err}");
        assert!(err.contains("index 2"), "{err}");
    }
}

#[test]
fn unknown_layout_is_named() {
    let (dir, mut tensors) = saved();
    for t in tensors.iter_mut().filter(|(k, _, _)| k.starts_with("language_model.model.")) {
        t.0 = t.0.replace("language_model.model.", "transformer.");
    }
    rewrite(dir.path(), &tensors);
    let err = load_error(dir.path()).to_string();
    assert!(err.contains("transformer.") && err.contains("unknown checkpoint layout"), "{err}");
}

#[test]
fn truncated_file_is_reported() {
    let (dir, _) = saved();
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_error(dir.path());
    assert!(matches!(err, ModelError::Safetensors { .. }), "{err}");
}
