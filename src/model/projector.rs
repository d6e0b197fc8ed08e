//! The multi-modal projector: vision features to decoder embeddings (`multi_modal_projector.*`).

use super::config::ProjectorKind;
use super::linear_rows;
use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Tensor};

/// `linear_1` alone ([`ProjectorKind::Linear`]) or `linear_2(gelu(linear_1(x)))`
/// ([`ProjectorKind::Mlp2xGelu`]); the kind is the presence of `linear_2`.
#[derive(Module, Debug)]
pub struct Projector {
    /// Vision width to text width.
    pub linear_1: Linear,
    /// Text width to text width, after an exact GELU (MLP kind only).
    pub linear_2: Option<Linear>,
}

impl Projector {
    /// A randomly initialised projector from `d_vision` to `d_text`.
    pub fn init(kind: ProjectorKind, d_vision: usize, d_text: usize, bias: bool, device: &Device) -> Self {
        let linear = |i: usize| {
            LinearConfig::new(i, d_text)
                .with_bias(bias)
                .with_initializer(Initializer::Normal { mean: 0.0, std: 0.02 })
                .init(device)
        };
        let linear_2 = match kind {
            ProjectorKind::Linear => None,
            ProjectorKind::Mlp2xGelu => Some(linear(d_text)),
        };
        Projector { linear_1: linear(d_vision), linear_2 }
    }

    /// # Shapes
    /// - `features`: `[n, f, d_vision]` -> `[n, f, d_text]`
    pub fn forward(&self, features: Tensor<3>) -> Tensor<3> {
        let x = linear_rows(&self.linear_1, features);
        match &self.linear_2 {
            Some(linear_2) => linear_rows(linear_2, gelu(x)),
            None => x,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::inference_device;

    #[test]
    fn both_kinds_map_vision_width_to_text_width() {
        let device = inference_device();
        let x = Tensor::<3>::ones([2, 5, 8], &device);
        for kind in [ProjectorKind::Linear, ProjectorKind::Mlp2xGelu] {
            let projector = Projector::init(kind, 8, 16, true, &device);
            assert_eq!(projector.linear_2.is_some(), kind == ProjectorKind::Mlp2xGelu);
            assert_eq!(projector.forward(x.clone()).dims(), [2, 5, 16]);
        }
    }
}
