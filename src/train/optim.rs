//! Optimiser helpers burn leaves to the caller: the AdamW every trainer uses, global-norm gradient
//! clipping, and parameter ids that survive a checkpoint (burn keys optimiser state by `ParamId`,
//! and a model reloaded from safetensors gets fresh ids).

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::Tensor;
use std::collections::BTreeMap;

/// AdamW as PyTorch and the LLaVA recipes configure it: betas (0.9, 0.999) and epsilon 1e-8.
/// burn's default epsilon, 1e-5, damps every update whose second moment is small, and the tiny
/// models' gradients often are: with it a lookup task stayed on its prior for 600 steps that 1e-8
/// learns in 300-600, as PyTorch does (README, "What the vision tower changed").
pub fn adamw(weight_decay: f64) -> AdamWConfig {
    AdamWConfig::new().with_weight_decay(weight_decay as f32).with_epsilon(1e-8)
}

/// Global L2 norm of the gradients, and the gradients scaled so that norm is at most `max_norm`
/// (as `torch.nn.utils.clip_grad_norm_`; 0 turns clipping off). Returns the norm before clipping.
pub fn clip_global_norm<M: Module>(model: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    struct SumSq<'a> {
        grads: &'a GradientsParams,
        sum: f64,
    }
    impl ModuleVisitor for SumSq<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                self.sum += g.powi_scalar(2).sum().into_scalar::<f32>() as f64;
            }
        }
    }
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        scale: f32,
    }
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(param.id) {
                self.grads.register(param.id, g.mul_scalar(self.scale));
            }
        }
    }
    let mut sq = SumSq { grads, sum: 0.0 };
    model.visit(&mut sq);
    let norm = sq.sum.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        model.visit(&mut Scale { grads, scale: (max_norm / (norm + 1e-6)) as f32 });
    }
    norm
}

/// Parameter ids by dotted path, saved beside a checkpoint.
pub fn param_ids<M: Module>(model: &M) -> BTreeMap<String, u64> {
    struct Ids {
        stack: Vec<String>,
        out: BTreeMap<String, u64>,
    }
    impl ModuleVisitor for Ids {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.stack.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.stack.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.out.insert(self.stack.join("."), param.id.val());
        }
    }
    let mut v = Ids { stack: Vec::new(), out: BTreeMap::new() };
    model.visit(&mut v);
    v.out
}

/// Gives a reloaded model the parameter ids it had when its checkpoint was written, so the
/// optimiser state saved with it applies again.
pub fn restore_param_ids<M: Module>(model: M, ids: &BTreeMap<String, u64>) -> M {
    struct Assign<'a> {
        stack: Vec<String>,
        ids: &'a BTreeMap<String, u64>,
    }
    impl ModuleMapper for Assign<'_> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.stack.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.stack.pop();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            match self.ids.get(&self.stack.join(".")) {
                Some(&id) => {
                    let (_, value, mapper) = param.consume();
                    Param::from_mapped_value(ParamId::from(id), value, mapper)
                }
                None => param,
            }
        }
    }
    model.map(&mut Assign { stack: Vec::new(), ids })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};

    #[derive(Module, Debug)]
    struct Two {
        a: Linear,
        b: Linear,
    }

    #[test]
    fn clipping_scales_to_the_global_norm() {
        let device = crate::backend::training_device();
        let m = Two { a: LinearConfig::new(2, 2).init(&device), b: LinearConfig::new(2, 1).init(&device) };
        let x = Tensor::<2>::ones([1, 2], &device);
        let loss = m.b.forward(m.a.forward(x)).sum().mul_scalar(100.0);
        let mut grads = GradientsParams::from_grads(loss.backward(), &m);
        let norm = clip_global_norm(&m, &mut grads, 1.0);
        assert!(norm > 1.0);
        let after = clip_global_norm(&m, &mut grads, 0.0);
        assert!((after - 1.0).abs() < 1e-4, "norm after clipping {after}");
    }

    #[test]
    fn ids_survive_a_rebuild() {
        let device = crate::backend::inference_device();
        let m = Two { a: LinearConfig::new(2, 2).init(&device), b: LinearConfig::new(2, 1).init(&device) };
        let ids = param_ids(&m);
        assert_eq!(ids.keys().collect::<Vec<_>>(), ["a.bias", "a.weight", "b.bias", "b.weight"]);
        let fresh =
            Two { a: LinearConfig::new(2, 2).init(&device), b: LinearConfig::new(2, 1).init(&device) };
        assert_ne!(param_ids(&fresh), ids);
        assert_eq!(param_ids(&restore_param_ids(fresh, &ids)), ids);
    }
}
