//! Normalisation layers with the parameter names of the checkpoints (`weight`, `bias`; burn's own
//! use `gamma` / `beta`), so that loading stays key for key.

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

/// LayerNorm over the last dimension (CLIP).
#[derive(Module, Debug)]
pub struct LayerNorm {
    /// Scale, `[d]`.
    pub weight: Param<Tensor<1>>,
    /// Shift, `[d]`.
    pub bias: Param<Tensor<1>>,
    /// Added to the variance.
    pub eps: f64,
}

impl LayerNorm {
    /// A LayerNorm of width `d` at identity (weight 1, bias 0).
    pub fn new(d: usize, eps: f64, device: &Device) -> Self {
        LayerNorm {
            weight: Param::from_tensor(Tensor::ones([d], device)),
            bias: Param::from_tensor(Tensor::zeros([d], device)),
            eps,
        }
    }

    /// # Shapes
    /// - `x`: `[..., d]` -> `[..., d]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let (var, mean) = x.clone().var_mean_bias(D - 1);
        let x = (x - mean) / (var + self.eps).sqrt();
        x * self.weight.val().unsqueeze() + self.bias.val().unsqueeze()
    }
}

/// RMSNorm over the last dimension (LLaMA): `x / sqrt(mean(x^2) + eps) * weight`.
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// Scale, `[d]`.
    pub weight: Param<Tensor<1>>,
    /// Added to the mean square.
    pub eps: f64,
}

impl RmsNorm {
    /// An RMSNorm of width `d` with weight 1.
    pub fn new(d: usize, eps: f64, device: &Device) -> Self {
        RmsNorm { weight: Param::from_tensor(Tensor::ones([d], device)), eps }
    }

    /// # Shapes
    /// - `x`: `[..., d]` -> `[..., d]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let rms = (x.clone().square().mean_dim(D - 1) + self.eps).sqrt();
        x / rms * self.weight.val().unsqueeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::inference_device;

    #[test]
    fn norms_match_hand_values() {
        let device = inference_device();
        let x = Tensor::<2>::from_floats([[1.0, 2.0, 3.0, 6.0]], &device);
        // mean 3, biased variance (4 + 1 + 0 + 9) / 4 = 3.5
        let ln = LayerNorm::new(4, 0.0, &device).forward(x.clone());
        let s = 3.5f32.sqrt();
        let expected = [-2.0 / s, -1.0 / s, 0.0, 3.0 / s];
        // mean square (1 + 4 + 9 + 36) / 4 = 12.5
        let rms = RmsNorm::new(4, 0.0, &device).forward(x);
        let r = 12.5f32.sqrt();
        let ln = ln.into_data().try_into_vec_as::<f32>().unwrap();
        let rms = rms.into_data().try_into_vec_as::<f32>().unwrap();
        for i in 0..4 {
            assert!((ln[i] - expected[i]).abs() < 1e-5);
            assert!((rms[i] - [1.0, 2.0, 3.0, 6.0][i] / r).abs() < 1e-5);
        }
    }
}
